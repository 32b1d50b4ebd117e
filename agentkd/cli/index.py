"""`agentkd index`: build, query and serve retrieval indexes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Retrieval indexes: build from a corpus, query, serve over HTTP.", no_args_is_help=True)


@app.command("build")
def build(
    corpus: str = typer.Argument(..., help="embedded:wiki-vital, a JSONL file, hf:NAME[:SPLIT] or a dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder to write (a killed dense build resumes here)."),
    kind: str = typer.Option("bm25", help="bm25, dense or hybrid."),
    limit: Optional[int] = typer.Option(None, help="Only the first N passages."),
    encoder: Optional[str] = typer.Option(None, help="Dense encoder: embedded:minilm, a folder or a hub id."),
    faiss: Optional[str] = typer.Option(None, help="faiss index type: flat, hnsw or ivf."),
    query_prefix: Optional[str] = typer.Option(None, help="Encoder query prefix, e.g. 'query: '."),
    passage_prefix: Optional[str] = typer.Option(None, help="Encoder passage prefix, e.g. 'passage: '."),
    chunk_size: Optional[int] = typer.Option(None, help="Passages per saved embedding chunk."),
    faiss_file: Optional[Path] = typer.Option(None, help="Plug in an existing faiss index of this corpus (no encoding)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML with an `index` section."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a config key: a.b=value."),
) -> None:
    """Build an index folder from a corpus and print its metadata."""
    import json

    from agentkd.core.config import load_config
    from agentkd.tools.config import IndexConfig
    from agentkd.tools.retrieval.build import build_index

    sets = [f"corpus={json.dumps(corpus)}", f"kind={json.dumps(kind)}"]
    for key, value in (("limit", limit), ("encoder.model", encoder), ("faiss", faiss), ("chunk_size", chunk_size),
                       ("encoder.query_prefix", query_prefix), ("encoder.passage_prefix", passage_prefix),
                       ("faiss_file", str(faiss_file) if faiss_file else None)):
        if value is not None:
            sets.append(f"{key}={json.dumps(value)}")
    cfg = load_config(IndexConfig, config, section="index" if config else None, overrides=sets + list(overrides or []))
    meta = build_index(cfg, out, show_progress=True)
    summary = {k: meta[k] for k in ("kind", "corpus", "count", "corpus_sha256")}
    if meta["bm25"]:
        summary["bm25_build_s"] = meta["bm25"]["build_s"]
    if meta["dense"]:
        d = meta["dense"]
        summary |= {"encoder": d["encoder"]["model"], "dim": d["dim"], "faiss": d["faiss"]["type"],
                    "encode_s": d["encode_s"], "chunks": d["chunks"], "chunks_reused": d["chunks_reused"]}
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"index written to {out}")


@app.command("query")
def query(
    index: Path = typer.Argument(..., help="Index folder from `agentkd index build`."),
    question: str = typer.Argument(..., help="The query."),
    k: int = typer.Option(3, "-k", help="Passages to return."),
    mode: Optional[str] = typer.Option(None, help="bm25, dense or hybrid (default: the index's kind)."),
    max_chars: Optional[int] = typer.Option(None, help="Truncate passages to this many characters."),
) -> None:
    """Print the top-k passages for a query, as the search tool would return them."""
    from agentkd.tools.retrieval.build import load_index
    from agentkd.tools.search import format_hits

    typer.echo(format_hits(load_index(index).search(question, k, mode), max_chars))


@app.command("serve")
def serve(
    index: Path = typer.Argument(..., help="Index folder to serve."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(8765, help="Port (0: any free port)."),
) -> None:
    """Serve an index over HTTP (POST /search, /search_batch; GET /health) until interrupted."""
    from agentkd.tools.retrieval.build import load_index
    from agentkd.tools.retrieval.server import RetrievalServer

    server = RetrievalServer(load_index(index), host=host, port=port)
    typer.echo(f"serving {index} at {server.url} (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()


@app.command("info")
def info(index: Path = typer.Argument(..., help="Index folder.")) -> None:
    """Print an index's metadata (kind, corpus sha256, counts, encoder, faiss parameters)."""
    import json

    from agentkd.tools.retrieval.build import read_meta

    typer.echo(json.dumps(read_meta(index), indent=2))
