"""The deployed pipeline, driven by hand against moto and `cargo lambda watch`:

    events table --DynamoDB stream--> relay --PutEvents--> moto bus
        --rules from template.yaml--> one SQS queue per consumer function
        --event source mapping (played here)--> projector / consent /
            campaign / channel, invoked with SQS batches

moto cannot invoke local functions, so `pump()` plays Lambda's part: each
rule of template.yaml (same EventPattern, matched by moto) fills its SQS
queue, and the harness polls each queue and invokes the function that reads
it with an SQS batch, deleting only the messages the function did not report
in `batchItemFailures` (decision 0029). The relay gets real stream records
read from moto's DynamoDB stream.
"""
import json
import pathlib
import subprocess
import tempfile
import uuid

import boto3
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent


class _CfnLoader(yaml.SafeLoader):
    pass


def _any_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_CfnLoader.add_multi_constructor("!", _any_tag)


QUEUE_FED = {"projector", "consent", "campaign", "channel"}


def template_rules():
    """(binary, EventPattern) for every rule on the crm bus of template.yaml
    whose target is a queue a function reads (its SQS event)."""
    doc = yaml.load((REPO / "template.yaml").read_text(), Loader=_CfnLoader)
    resources = doc["Resources"]
    readers = {}
    for resource in resources.values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") == "SQS":
                readers[event["Properties"]["Queue"].removesuffix(".Arn")] = binary
    rules = []
    for resource in resources.values():
        if resource.get("Type") != "AWS::Events::Rule" or "EventBusName" not in resource["Properties"]:
            continue
        for target in resource["Properties"].get("Targets", []):
            binary = readers.get(str(target.get("Arn", "")).removesuffix(".Arn"))
            if binary:
                rules.append((binary, resource["Properties"]["EventPattern"]))
    return rules


def sqs_batch(bodies):
    """An SQS batch as an event source mapping hands it to a function: each
    body (an EventBridge event, or a message received from a queue) a record."""
    records = []
    for i, body in enumerate(bodies):
        if isinstance(body, dict) and "Body" in body:
            message_id, receipt, text = body["MessageId"], body["ReceiptHandle"], body["Body"]
        else:
            message_id, receipt, text = f"m{i}-{uuid.uuid4().hex[:8]}", "r", json.dumps(body)
        records.append({
            "messageId": message_id,
            "receiptHandle": receipt,
            "body": text,
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:smoke",
            "awsRegion": "us-east-1",
        })
    return {"Records": records}


def invoke_batch(port, function, bodies):
    """Invokes a queue-fed function with one SQS batch; its answer
    (`{"batchItemFailures": [...]}`)."""
    return invoke(port, function, sqs_batch(bodies)) or {}


def invoke(port, function, payload):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(payload, f)
        path = f.name
    out = subprocess.run(
        ["cargo", "lambda", "invoke", function, "--invoke-address", "127.0.0.1",
         "--invoke-port", str(port), "--data-file", path, "--output-format", "json"],
        capture_output=True, text=True, timeout=300,
    )
    pathlib.Path(path).unlink(missing_ok=True)
    if out.returncode != 0:
        raise RuntimeError(f"cargo lambda invoke {function} failed: {out.stderr.strip()}")
    return json.loads(out.stdout) if out.stdout.strip() else None


def _stream_record(record, stream_arn):
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if hasattr(created, "timestamp"):
        dynamodb["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion", "us-east-1"),
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }


class Pipeline:
    def __init__(self, port, events_table, bus_name):
        self.port = port
        self.events_table = events_table
        self.bus_name = bus_name
        self.ddb = boto3.client("dynamodb")
        self.streams = boto3.client("dynamodbstreams")
        self.events = boto3.client("events")
        self.sqs = boto3.client("sqs")
        self.iterators = {}
        self.queues = {}
        self.stream_arn = None
        self.relayed = 0
        self.delivered = {}

    def setup(self):
        self.stream_arn = self.ddb.describe_table(TableName=self.events_table)["Table"]["LatestStreamArn"]
        for shard in self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]:
            it = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            self.iterators[shard["ShardId"]] = it
        try:
            self.events.create_event_bus(Name=self.bus_name)
        except self.events.exceptions.ResourceAlreadyExistsException:
            pass
        for i, (binary, pattern) in enumerate(template_rules()):
            name = f"smoke-{binary}-{i}-{uuid.uuid4().hex[:6]}"
            url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
            arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self.events.put_rule(Name=name, EventBusName=self.bus_name, EventPattern=json.dumps(pattern))
            self.events.put_targets(Rule=name, EventBusName=self.bus_name, Targets=[{"Id": "q", "Arn": arn}])
            self.queues[name] = (binary, url)
        return self

    def _relay(self):
        for shard, it in list(self.iterators.items()):
            while it:
                page = self.streams.get_records(ShardIterator=it, Limit=100)
                records = page.get("Records", [])
                if records:
                    batch = {"Records": [_stream_record(r, self.stream_arn) for r in records]}
                    answer = invoke(self.port, "relay", batch) or {}
                    failures = answer.get("batchItemFailures", [])
                    if failures:
                        raise RuntimeError(f"relay reported failures: {failures}")
                    self.relayed += len(records)
                self.iterators[shard] = page.get("NextShardIterator")
                if not records:
                    break
                it = self.iterators[shard]

    def _deliver(self):
        for binary, url in self.queues.values():
            while True:
                got = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
                messages = got.get("Messages", [])
                if not messages:
                    break
                answer = invoke_batch(self.port, binary, messages)
                failures = answer.get("batchItemFailures", [])
                if failures:
                    raise RuntimeError(f"{binary} reported failures: {failures}")
                self.delivered[binary] = self.delivered.get(binary, 0) + len(messages)
                self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                ])

    def pump(self):
        """Relay everything new in the stream, then deliver what the rules routed."""
        self._relay()
        self._deliver()
