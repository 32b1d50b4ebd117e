from agentkd.cli import main

main()
