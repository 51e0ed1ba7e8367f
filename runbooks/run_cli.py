"""`jetty run RUNBOOK.md --collection C`: run a runbook through the API with live progress.

It streams the run (`stream: true`), shows each step as it happens, prints the
result and its grades, and downloads the result files. Exit status 0 only when
the run succeeded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def parse_inputs(pairs: list[str]) -> dict[str, Any]:
    """`k=v` pairs; a value that is valid JSON (numbers, true, lists) is taken as such."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--input {pair!r} is not key=value")
        try:
            inputs[key] = json.loads(value)
        except ValueError:
            inputs[key] = value
    return inputs


def _describe(event: dict[str, Any]) -> str | None:
    if event.get("type") == "status":
        return f"[bold]status[/] {event.get('status')}"
    step = event.get("step") or {}
    data = step.get("data") or {}
    kind = step.get("type")
    if kind == "lifecycle":
        return f"[cyan]{data.get('event')}[/] {data.get('message') or ''}"
    if kind == "llm_call":
        usage = data.get("usage") or {}
        return (
            f"[magenta]model[/] {usage.get('total_tokens', 0)} tokens, {data.get('latency_ms')} ms"
        )
    if kind == "tool_call":
        args = json.dumps(data.get("arguments"), ensure_ascii=False)
        return f"[green]{data.get('name')}[/] {args[:120]}"
    if kind == "observation":
        if "exit_code" in data:
            return f"  → exit {data['exit_code']}"
        return "  → error" if data.get("is_error") else None
    if kind == "error":
        return f"[red]error[/] {data.get('reason')}: {data.get('message')}"
    return None


def run_remote(
    *,
    base_url: str,
    token: str,
    runbook: str,
    collection: str,
    inputs: dict[str, Any],
    files: list[Path],
    model: str | None,
    output_dir: Path,
) -> int:
    """Run and report; returns the process exit status."""
    try:
        return _run(base_url, token, runbook, collection, inputs, files, model, output_dir)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot talk to the gateway at {base_url}: {exc}") from None


def _run(
    base_url: str,
    token: str,
    runbook: str,
    collection: str,
    inputs: dict[str, Any],
    files: list[Path],
    model: str | None,
    output_dir: Path,
) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(60.0, read=None)
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as client:
        file_ids = []
        for path in files:
            with path.open("rb") as handle:
                uploaded = client.post(
                    "/v1/files", files={"file": (path.name, handle)}, data={"purpose": "user_data"}
                )
            _raise_for(uploaded)
            file_ids.append(uploaded.json()["id"])
        jetty: dict[str, Any] = {"collection": collection, "inputs": inputs, "files": file_ids}
        if runbook.startswith(("https://", "http://", "file://")):
            jetty["runbook_url"] = runbook
        else:
            jetty["runbook"] = Path(runbook).read_text(encoding="utf-8")
        body: dict[str, Any] = {"model": model, "messages": [], "stream": True, "jetty": jetty}
        result: dict[str, Any] | None = None
        content = ""
        with (
            console.status("starting…") as status,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                event = chunk.get("jetty") or {}
                delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
                content += delta.get("content") or ""
                if event.get("type") == "result":
                    result = event
                    continue
                if event.get("trajectory_id"):
                    status.update(f"run {event['trajectory_id']}")
                text = _describe(event)
                if text:
                    console.print(text)
        if result is None:
            console.print("[red]the stream ended without a result[/]")
            return 1
        _report(result, content)
        _download(client, result, output_dir)
    return 0 if result.get("status") == "succeeded" else 1


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        message = f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}"
    raise RuntimeError(message)


def _report(result: dict[str, Any], content: str) -> None:
    out = Console()
    out.print(content)
    color = "green" if result.get("status") == "succeeded" else "red"
    console.print(
        f"[{color}]{result.get('status')}[/] trajectory {result.get('trajectory_id')} cost ${result.get('cost_usd') or 0:.4f} in {result.get('duration_s')} s"
    )
    if result.get("error"):
        console.print(f"[red]{result['error'].get('code')}[/]: {result['error'].get('message')}")
    if result.get("grades"):
        table = Table("grade", "passed", "score", "comment")
        for grade in result["grades"]:
            table.add_row(
                grade["name"],
                str(grade["passed"]),
                str(grade["score"]),
                (grade.get("comment") or "")[:60],
            )
        console.print(table)


def _download(client: httpx.Client, result: dict[str, Any], output_dir: Path) -> None:
    files = result.get("files") or []
    if not files:
        return
    target = output_dir / result["trajectory_id"]
    for item in files:
        path = (target / item["path"]).resolve()
        if not path.is_relative_to(target.resolve()):
            continue  # never write outside the output directory
        path.parent.mkdir(parents=True, exist_ok=True)
        response = client.get(item["url"])
        _raise_for(response)
        path.write_bytes(response.content)
    console.print(f"{len(files)} file(s) saved to {target}")
