#!/usr/bin/env python3
"""Lambda smoke test: invoke the api function, running under `cargo lambda
watch`, with every sample event in events/api/ (in name order), and check each
answer's status code against events/api/expected.json.

Placeholders filled in from earlier answers:
  {{customer_id}}  the id returned by 01-register-customer.json
  {{token}}        the verification token, read from the customer's events

Before every GET, the stored events go through the deployed pipeline
(scripts/smoke_pipeline.py: DynamoDB stream -> relay -> bus -> rules of
template.yaml -> projector, consent, campaign and channel), so reads see the
projections. At the end the pipeline must have carried the campaigns'
MessageRequested events to the channel function (its rule's `$or` pattern,
matched by moto), and moto's SES must hold what it sent the customer.

Usage: lambda_smoke.py <invoke-port>
Environment: EVENTS_TABLE, EVENT_BUS_NAME and FROM_ADDRESS, as given to the
functions; AWS_ENDPOINT_URL (moto).
Needs: cargo-lambda on PATH, a running `cargo lambda watch` on 127.0.0.1:<port>
serving api, relay, projector, consent, campaign and channel against moto.
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from email.utils import parseaddr

REPO = pathlib.Path(__file__).resolve().parent.parent
EVENTS = REPO / "events" / "api"
sys.path.insert(0, str(REPO / "scripts"))
from consumer_smoke import moto_raw_emails  # noqa: E402
from smoke_pipeline import Pipeline  # noqa: E402


def invoke(port: int, payload: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(payload)
        path = f.name
    out = subprocess.run(
        ["cargo", "lambda", "invoke", "api", "--invoke-address", "127.0.0.1",
         "--invoke-port", str(port), "--data-file", path, "--output-format", "json"],
        capture_output=True, text=True, timeout=300,
    )
    pathlib.Path(path).unlink(missing_ok=True)
    if out.returncode != 0:
        raise RuntimeError(f"cargo lambda invoke failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def emails_to(address: str) -> list:
    """Subjects of the emails from FROM_ADDRESS to `address` that moto's SES keeps."""
    sender = parseaddr(os.environ["FROM_ADDRESS"])[1]
    subjects = []
    for m in moto_raw_emails(os.environ["AWS_ENDPOINT_URL"]):
        raw = m.get("raw_data") or ""
        if parseaddr(m.get("source") or "")[1] == sender and f"\r\nTo: {address}\r\n" in raw:
            subject = next((line[len("Subject: "):] for line in raw.split("\r\n") if line.startswith("Subject: ")), "?")
            subjects.append(subject)
    return subjects


def main() -> int:
    port = int(sys.argv[1])
    expected = json.loads((EVENTS / "expected.json").read_text())
    values = {}
    failures = 0
    pipeline = Pipeline(port, os.environ["EVENTS_TABLE"], os.environ["EVENT_BUS_NAME"]).setup()
    for name in sorted(expected):
        template = (EVENTS / name).read_text()
        payload = template
        for key, value in values.items():
            payload = payload.replace("{{" + key + "}}", value)
        if "{{" in payload and "}}" in payload.split("{{", 1)[1]:
            missing = payload.split("{{", 1)[1].split("}}", 1)[0]
            print(f"FAIL {name}: placeholder {{{{{missing}}}}} has no value yet")
            failures += 1
            continue
        try:
            if json.loads(payload).get("routeKey", "").startswith("GET "):
                pipeline.pump()
            answer = invoke(port, payload)
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"FAIL {name}: {e}")
            failures += 1
            continue
        status = answer.get("statusCode")
        body_text = answer.get("body") or ""
        try:
            body = json.loads(body_text) if body_text else None
        except json.JSONDecodeError:
            body = body_text
        ok = status == expected[name]
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {status} (expected {expected[name]})")
        if not ok:
            print(f"     body: {body_text[:500]}")
            failures += 1
        if name.endswith("-export-customer.json") and ok:
            # The export, whole: the customer's events decrypted (KMS on moto).
            registered = json.loads(json.loads((EVENTS / "01-register-customer.json").read_text())["body"])["email"]
            events = [e for s in (body or {}).get("streams", []) for e in s.get("events", [])]
            emails = [e["data"].get("email") for e in events if e.get("type") == "CustomerRegistered"]
            if not isinstance(body, dict) or body.get("customer_id") != values.get("customer_id") \
                    or emails != [registered] or body.get("event_count") != len(events):
                print(f"FAIL {name}: not the customer's whole export, decrypted: {body_text[:500]}")
                failures += 1
            else:
                print(f"ok   {name}: {len(events)} events in {len(body['streams'])} streams, decrypted")
        if name.startswith("01-") and isinstance(body, dict) and "id" in body:
            values["customer_id"] = body["id"]
        if isinstance(body, dict) and isinstance(body.get("items"), list):
            for event in body["items"]:
                if event.get("type") == "EmailVerificationRequested" and "data" in event:
                    values["token"] = event["data"]["token"]
    pipeline.pump()  # what the last requests stored, carried through as well
    print(f"pipeline: relayed {pipeline.relayed} stream records; delivered {pipeline.delivered}")
    if pipeline.relayed == 0 or not pipeline.delivered.get("projector") or not pipeline.delivered.get("consent"):
        print("FAIL the pipeline carried nothing to the consumers")
        failures += 1
    registered = json.loads(json.loads((EVENTS / "01-register-customer.json").read_text())["body"])["email"]
    sent = emails_to(registered)
    if not pipeline.delivered.get("channel") or not sent:
        print(f"FAIL the pipeline carried no MessageRequested to the channel function, or SES sent "
              f"{registered} nothing (channel deliveries: {pipeline.delivered.get('channel', 0)})")
        failures += 1
    else:
        print(f"ok   pipeline: channel sent {registered} {len(sent)} email(s) through SES: {sent}")
    print(f"lambda smoke: {len(expected) - failures}/{len(expected)} passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
