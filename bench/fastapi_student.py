"""The bare baseline of bench/serve.py: one model in a FastAPI app under one uvicorn worker.

    .venv/bin/python bench/fastapi_student.py --store DIR --model students/<run_id> --port P

What a team would write without Ray Serve: the model loaded with `distillery.models.load_model`,
the router's own V1 parsing and response (`distillery.serving.schema`), one forward pass per
request on the event loop (no batching), one torch thread, no access log. A text model's
requests are strings, tokenized as its Serve replica does (data/text.py).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from distillery.data.text import stored_encoding, tokenize  # noqa: E402
from distillery.models import load_model  # noqa: E402
from distillery.serving.schema import (  # noqa: E402
    Limits,
    RequestError,
    parse_v1,
    parse_v1_text,
    v1_error,
    v1_prediction,
)
from distillery.storage import Store  # noqa: E402


def build_app(store: str, parts: tuple[str, ...]) -> FastAPI:
    torch.set_num_threads(1)  # as a Serve replica runs it
    model, card = load_model(Store(store), parts)
    limits = Limits(card["num_features"], max_instances=1024, max_body_bytes=1_000_000)
    text = stored_encoding(Store(store), parts, card)
    version = parts[-1]
    app = FastAPI(title="student (bare FastAPI)")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/models/student:predict")
    async def predict(request: Request) -> JSONResponse:
        try:
            if text is None:
                x = parse_v1(await request.body(), limits).x  # (B, D) float32
            else:
                x = tokenize(parse_v1_text(await request.body(), limits).x.tolist(), text)[0]
        except RequestError as err:
            return JSONResponse(v1_error(err), err.status)
        with torch.inference_mode():
            probs = torch.softmax(model(torch.from_numpy(x)).float(), dim=1).numpy()  # (B, C)
        return JSONResponse(v1_prediction(probs, "student", version, uuid.uuid4().hex,
                                          card.get("class_names")))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", required=True, help="store path of the model, e.g. "
                                                       "students/<run_id>")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = build_app(args.store, tuple(args.model.split("/")))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
