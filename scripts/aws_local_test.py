#!/usr/bin/env python3
"""End-to-end test of scripts/aws-local, run by hand (or by scripts/test):

    python3 scripts/aws_local_test.py        # the venv's python, or any with boto3 and PyYAML

1. `scripts/aws-local up` on free ports, with a 2 s visibility timeout and a
   maxReceiveCount of 2, in a temporary state directory (its own moto);
2. registers a customer with `cargo lambda invoke api` (events/api/01-...);
3. pumps: the stream reaches the relay, the rules fill the queues, the
   consumers take them; the customer's documents are in the read-models
   table, `GET /customers/{id}` answers 200 with the email, no message was
   reported failed and every dead-letter queue is empty;
4. puts on the campaign queue a CustomerRegistered of that customer whose
   email ciphertext is corrupt: the campaign function reports it in
   `batchItemFailures` (decrypting fails, decision 0029), it comes back after
   the visibility timeout, and after maxReceiveCount receives moto's redrive
   policy moves it, unchanged, to the campaign's dead-letter queue;
5. pump fires a due timer (EventBridge Scheduler played) onto the bus;
6. a function whose process is killed is started again and answers;
7. `scripts/aws-local down` stops moto, the watchers and the router.

Exits non-zero on the first failed check. Building the functions takes
minutes the first time (cargo waits on the shared target dir's lock).
"""
import base64
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import aws_local  # noqa: E402

MAX_RECEIVES = 2


def check(ok: bool, what: str, detail="") -> None:
    if not ok:
        raise SystemExit(f"FAIL {what}" + (f": {detail}" if detail else ""))
    print(f"ok   {what}")


def cli(state_dir: pathlib.Path, *args: str) -> str:
    out = subprocess.run([str(REPO / "scripts" / "aws-local"), "--state-dir", str(state_dir), *args],
                         cwd=REPO, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"FAIL scripts/aws-local {' '.join(args)} exited {out.returncode}:\n"
                         f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def invoke_api(port: int, sample: str, values: dict) -> dict:
    payload = (REPO / "events" / "api" / sample).read_text()
    for key, value in values.items():
        payload = payload.replace("{{" + key + "}}", value)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(payload)
    command = ["cargo", "lambda", "invoke", "api", "--invoke-address", "127.0.0.1", "--invoke-port", str(port),
               "--data-file", f.name, "--output-format", "json"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PATH": aws_local._tool_path()})
    pathlib.Path(f.name).unlink(missing_ok=True)
    if out.returncode != 0:
        raise SystemExit(f"FAIL cargo lambda invoke api ({sample}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def corrupt_registration(customer_id: str) -> dict:
    """The EventBridge event of a CustomerRegistered of `customer_id` whose
    email is an `enc:v1:` field that does not open under the customer's key."""
    event = json.loads((REPO / "events" / "projector" / "customer-registered.json").read_text())
    detail = event["detail"]
    detail.update(event_id=str(uuid.uuid4()), stream_id=f"customer-{customer_id}", version=999,
                  customer_id=customer_id)
    detail["data"].update(customer_id=customer_id,
                          email="enc:v1:" + base64.urlsafe_b64encode(bytes(48)).decode().rstrip("="))
    event["id"] = str(uuid.uuid4())
    return event


def check_timers(state: dict) -> None:
    """pump plays EventBridge Scheduler: a due one-time schedule of the
    stack's group puts its event on the bus and is deleted; a later one stays
    until --timers-ahead reaches it."""
    endpoint, resources = state["endpoint"], state["resources"]
    scheduler, events, sqs = (aws_local.client(s, endpoint) for s in ("scheduler", "events", "sqs"))
    group, bus = resources["ScheduleGroup"]["ref"], resources["CrmBus"]
    url = sqs.create_queue(QueueName="aws-local-test-timers")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="aws-local-test-timers", EventBusName=bus["ref"],
                    EventPattern=json.dumps({"source": ["aws-local.test"]}))
    events.put_targets(Rule="aws-local-test-timers", EventBusName=bus["ref"], Targets=[{"Id": "q", "Arn": arn}])
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for name, due in (("due", now - datetime.timedelta(seconds=5)), ("later", now + datetime.timedelta(hours=1))):
        scheduler.create_schedule(
            Name=name, GroupName=group, ScheduleExpression=f"at({due:%Y-%m-%dT%H:%M:%S})",
            ScheduleExpressionTimezone="UTC", FlexibleTimeWindow={"Mode": "OFF"}, ActionAfterCompletion="DELETE",
            Target={"Arn": bus["Arn"], "RoleArn": resources["SchedulerRole"]["Arn"], "Input": json.dumps({"timer": name}),
                    "EventBridgeParameters": {"DetailType": "TestTimer", "Source": "aws-local.test"}})
    counts = aws_local.pump(state, rounds=1)
    left = [s["Name"] for s in scheduler.list_schedules(GroupName=group)["Schedules"]]
    got = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]
    # The group also holds the journeys' own timers (the registered customer's).
    check("due" not in left and "later" in left and [g["detail"] for g in got] == [{"timer": "due"}]
          and got[0]["detail-type"] == "TestTimer", "pump fires a due timer onto the bus, once, and deletes it",
          (counts.timers_fired, left, got))
    counts = aws_local.pump(state, rounds=1, timers_until=datetime.datetime.now(datetime.timezone.utc)
                            + datetime.timedelta(hours=2))
    left = [s["Name"] for s in scheduler.list_schedules(GroupName=group)["Schedules"]]
    check(counts.timers_fired >= 1 and "later" not in left, "pump with timers ahead fires a later timer",
          (counts, left))


def main() -> int:
    state_dir = pathlib.Path(tempfile.mkdtemp(prefix="aws-local-test."))
    port = aws_local.free_port()
    try:
        print(f"==> scripts/aws-local up --port {port} (state in {state_dir})")
        up = cli(state_dir, "up", "--port", str(port), "--visibility-timeout", "2",
                 "--max-receive-count", str(MAX_RECEIVES))
        check(f"cargo lambda invoke api --invoke-address 127.0.0.1 --invoke-port {port}" in up,
              "up prints how to invoke a function")
        check("scripts/aws-local pump" in up and "scripts/aws-local send" in up, "up prints how to drive the queues")
        state = aws_local.load_state(state_dir)
        resources = state["resources"]
        for logical in ("EventsTable", "ReadModelsTable", "KeysTable", "CrmBus", "ProjectorRule", "ConsentRule",
                        "CampaignRule", "ChannelRule", "ProjectorQueue", "CampaignDeadLetterQueue",
                        "DataKeysKey", "UnsubscribeSecret", "ScheduleGroup", "MailConfigurationSet"):
            check(logical in resources, f"template.yaml's {logical} created as {resources.get(logical, {}).get('ref')}")
        campaign = next(c for c in state["consumers"] if c["function"] == "campaign")
        check(campaign["dead_letter_queue"] == "CampaignDeadLetterQueue" and campaign["max_receive_count"] == MAX_RECEIVES,
              "the campaign queue redrives to its dead-letter queue after 2 receives")
        env = state["functions"]["projector"]["environment"]
        check(all(pathlib.Path(state_dir / "bin" / f).exists() for f in state["functions"]),
              "the functions run from a copy of this build", sorted(state["functions"]))
        check(env["DEAD_LETTER_QUEUE_URL"] == resources["ProjectorDeadLetterQueue"]["QueueUrl"]
              and state["functions"]["relay"]["environment"]["DEAD_LETTER_QUEUE_URL"]
              == resources["RelayDeadLetterQueue"]["QueueUrl"],
              "each function runs with its own dead-letter queue from template.yaml")

        registered = invoke_api(port, "01-register-customer.json", {})
        check(registered.get("statusCode") == 201, "api registers a customer (201)", registered)
        customer_id = json.loads(registered["body"])["id"]

        counts = aws_local.pump(state, rounds=10)
        aws_local.save_state(state_dir, state)
        print(counts.summary())
        check(counts.relayed > 0 and counts.delivered.get("relay") == counts.relayed,
              "pump relays the stored events from the stream", counts)
        check(counts.delivered.get("projector", 0) > 0 and counts.delivered.get("consent", 0) > 0
              and counts.delivered.get("campaign", 0) > 0, "pump delivers the queues to their functions", counts)
        check(not counts.reported_failed and not counts.invocation_errors and not counts.in_flight,
              "no message reported failed, none in flight", counts)
        check(not counts.dead_letters, "every dead-letter queue is empty", counts.dead_letters)

        ddb = aws_local.client("dynamodb", state["endpoint"])
        items = ddb.scan(TableName=resources["ReadModelsTable"]["ref"])["Items"]
        docs = [i for i in items if i.get("kind", {}).get("S") == "doc"
                and customer_id in i["pk"]["S"] + i["sk"]["S"]]
        check(docs, f"the customer's documents are in {resources['ReadModelsTable']['ref']}",
              [(i["pk"]["S"], i["sk"]["S"]) for i in items][:20])
        got = invoke_api(port, "02-get-customer.json", {"customer_id": customer_id})
        email = json.loads(json.loads((REPO / "events/api/01-register-customer.json").read_text())["body"])["email"]
        check(got.get("statusCode") == 200 and email in got.get("body", ""),
              "GET /customers/{id} answers the customer 360 from the read models", got)

        again = cli(state_dir, "pump", "--rounds", "2")
        check("relayed 0 stream records" in again, "a second pump (CLI) finds nothing new", again)

        poison = corrupt_registration(customer_id)
        aws_local.send(state, "campaign", poison)
        counts = aws_local.pump(state, rounds=MAX_RECEIVES + 3)
        aws_local.save_state(state_dir, state)
        print(counts.summary())
        check(counts.reported_failed.get("campaign") == MAX_RECEIVES,
              f"the undecryptable message is reported failed, comes back, {MAX_RECEIVES} receives in all",
              counts.reported_failed)
        sqs = aws_local.client("sqs", state["endpoint"])
        parked = sqs.receive_message(QueueUrl=resources["CampaignDeadLetterQueue"]["QueueUrl"],
                                     MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        check(len(parked) == 1 and json.loads(parked[0]["Body"]) == poison,
              "the redrive policy moved it, as received, to CampaignDeadLetterQueue", parked)
        depths = aws_local.queue_depths(state)
        check(depths["CampaignQueue"] == (0, 0), "the campaign queue is empty", depths)
        check(all(sum(depths[q]) == 0 for q in state["dead_letter_queues"] if q != "CampaignDeadLetterQueue"),
              "no other dead letters", depths)
        check_timers(state)

        # A function that dies is started again, as Lambda starts a new environment.
        shell = state["lambda"]["instances"]["api"]
        children = subprocess.run(["pgrep", "-P", str(shell)], capture_output=True, text=True).stdout.split()
        check(len(children) == 1, "the api function runs under its restart loop", children)
        os.kill(int(children[0]), signal.SIGKILL)
        health = invoke_api(port, "18-health.json", {})
        check(health.get("statusCode") == 200, "after its process was killed, the api function answers again", health)
    finally:
        print("==> scripts/aws-local down")
        pids = [p for p in aws_local.pids(json.loads(aws_local.state_file(state_dir).read_text()))] \
            if aws_local.state_file(state_dir).exists() else []
        cli(state_dir, "down")
        shutil.rmtree(state_dir / "bin", ignore_errors=True)  # the binaries' copies; the logs stay on failure
    check(not any(aws_local._alive(p) for p in pids if p), "down stopped moto, cargo lambda watch and the functions")
    shutil.rmtree(state_dir, ignore_errors=True)
    print("aws-local test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
