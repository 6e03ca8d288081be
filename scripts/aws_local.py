#!/usr/bin/env python3
"""The stack of template.yaml on one machine: moto, the functions under
`cargo lambda watch`, and a pump that plays the event sources.

    scripts/aws-local up [--port 9000] [--moto-port N] [--visibility-timeout S]
                         [--max-receive-count K] [--parameter Key=Value ...]
                         [--features crash-points --env CRM_CRASH_RATE=0.05 ...]
    scripts/aws-local pump [--rounds N] [--timers-ahead 2h]
    scripts/aws-local send <function> <file>   # a message on the function's queue
    scripts/aws-local status                   # queue and dead-letter depths
    scripts/aws-local env                      # export lines for boto3 / the aws CLI
    scripts/aws-local down

`up` starts moto (scripts/moto_server.py, decision 0005), creates in it what
template.yaml declares (tables with their streams and TTL, the crm bus, every
`AWS::Events::Rule` with its pattern and queue targets, the SQS queues with
their redrive policies to their dead-letter queues, the KMS key, the secrets
(generated values, or the template's; the write keys' secret then gets the
smoke source, LOCAL_SECRET_VALUES, as an operator puts it after deploying:
the functions read them at cold start by the ARNs their environment names,
decision 0047), the IAM role of the timers, the schedule group, the SES
configuration set and identity) under names derived from the stack name, and
builds the functions and runs `cargo lambda watch --only-lambda-apis` on
`--port` (the Lambda invoke and runtime APIs that `cargo lambda invoke`
talks to), with each function's binary (a copy of this build) polling it, in
the environment the template gives that function, resolved to these
resources (functions differ: each has its own DEAD_LETTER_QUEUE_URL), and
started again when it exits. What was created goes to
`<state dir>/state.json`, the logs next to it.

`pump` plays what AWS would do and moto cannot: EventBridge Scheduler (the
one-time schedules of the stack's group that are due put their event on the
bus), the events table's stream into the relay (the mapping's filter and
batch size), then each consumer queue into its function as SQS batches (the
queue's event source mapping).
Messages a function reports in `batchItemFailures` are not deleted: they come
back after the queue's visibility timeout, and moto's redrive policy moves a
message to the dead-letter queue on the receive after `maxReceiveCount`.
A failed invocation deletes nothing, as on AWS; so does a crashed one (the
function's process exited before answering, e.g. at a crash point of a
`--features crash-points` build): the pump learns it from the function's exit
log at once, every message of the batch comes back after the visibility
timeout, and the process is started again for the next invocation.

Importable: `create_stack`, `start_moto`, `start_functions`, `pump`,
`fire_timers`, `queue_depths`, `stop(pids(state))` are what the fault-injection harness
uses. Not played: SES feedback (moto's SES emits none), the segments
function's daily schedule, the rules' own retry policies and dead-letter
configs, HTTP API authorizers.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import boto3
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template.yaml"
DEFAULT_STACK = "crm-local"
DEFAULT_STATE_DIR = REPO / ".aws-local"
ACCOUNT = "123456789012"
REGION = "us-east-1"

# Values for the parameters that have no default in template.yaml.
LOCAL_PARAMETERS = {
    "JwtIssuer": "https://auth.example.com/",
    "JwtAudience": "crm-local",
    "FromAddress": "Shop <news@shop.example.com>",
    "MailDomain": "shop.example.com",
    "PublicBaseUrl": "http://127.0.0.1",
    "ShopUrl": "https://shop.example.com",
}

# What an operator puts into a secret after deploying (decision 0047:
# template.yaml's IngestWriteKeysSecret holds only a comment until then):
# the smoke source, so that the api samples in events/api/ (50-52) can write.
# Put as a second version, as `aws secretsmanager put-secret-value` would.
LOCAL_SECRET_VALUES = {
    "IngestWriteKeysSecret": "smoke:wk_smoke_0123456789abcdef",
}

# Resource types created in moto, in creation order (a type only refers to
# types before it).
CREATED_TYPES = [
    "AWS::KMS::Key",
    "AWS::KMS::Alias",
    "AWS::SecretsManager::Secret",
    "AWS::IAM::Role",
    "AWS::DynamoDB::Table",
    "AWS::Events::EventBus",
    "AWS::Scheduler::ScheduleGroup",
    "AWS::SQS::Queue",
    "AWS::SES::ConfigurationSet",
    "AWS::SES::EmailIdentity",
    "AWS::SES::ConfigurationSetEventDestination",
    "AWS::Events::Rule",
]


def log(message: str) -> None:
    print(f"aws-local: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ template


class _IntrinsicLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation's short tags as their long form
    (`!Ref X` -> {"Ref": "X"}, `!GetAtt A.B` -> {"Fn::GetAtt": ["A", "B"]})."""


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_IntrinsicLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: pathlib.Path = TEMPLATE) -> dict:
    return yaml.load(path.read_text(), Loader=_IntrinsicLoader)


class Unresolved(KeyError):
    """A reference to something this stack did not create."""


_NO_VALUE = object()
_DYNAMIC_SECRET = re.compile(r"\{\{resolve:secretsmanager:(.+?):SecretString(?::[^}]*)?\}\}")


class Resolver:
    """Resolves the intrinsic functions of the template against the
    parameters and the resources created so far."""

    def __init__(self, template: dict, stack: str, parameters: dict, region: str = REGION):
        self.template = template
        self.parameters = parameters
        self.pseudo = {
            "AWS::StackName": stack,
            "AWS::Region": region,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{region}:{ACCOUNT}:stack/{stack}/local",
        }
        self.refs: dict[str, object] = {}
        self.attrs: dict[str, dict] = {}
        self.secret_values: dict[str, str] = {}

    def ref(self, name: str):
        if name in self.pseudo:
            return self.pseudo[name]
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise Unresolved(name)

    def get_att(self, name: str, attribute: str):
        try:
            return self.attrs[name][attribute]
        except KeyError:
            raise Unresolved(f"{name}.{attribute}") from None

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def sub(self, text: str, variables: dict) -> str:
        def one(match):
            expr = match.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"
            if expr in variables:
                return str(variables[expr])
            if "." in expr and expr.split(".", 1)[0] not in self.pseudo:
                return str(self.get_att(*expr.split(".", 1)))
            return str(self.ref(expr))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, value):
        if isinstance(value, list):
            out = [self.resolve(v) for v in value]
            return [v for v in out if v is not _NO_VALUE]
        if isinstance(value, str):
            return _DYNAMIC_SECRET.sub(lambda m: self._secret(m.group(1)), value)
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    def _function(self, name: str, arg):
        if name == "GetAtt":
            return self.get_att(arg[0], self.resolve(arg[1]))
        if name == "Sub":
            if isinstance(arg, list):
                return self.resolve(self.sub(arg[0], self.resolve(arg[1])))
            return self.resolve(self.sub(arg, {}))
        if name == "Join":
            return str(arg[0]).join(str(v) for v in self.resolve(arg[1]))
        if name == "Select":
            return self.resolve(arg[1])[int(self.resolve(arg[0]))]
        if name == "Split":
            return str(self.resolve(arg[1])).split(arg[0])
        if name == "FindInMap":
            m, k1, k2 = (self.resolve(a) for a in arg)
            return self.template["Mappings"][m][k1][k2]
        if name == "If":
            return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
        if name == "Equals":
            a, b = self.resolve(arg)
            return str(a) == str(b)
        if name == "Not":
            return not self.resolve(arg[0])
        if name == "And":
            return all(self.resolve(arg))
        if name == "Or":
            return any(self.resolve(arg))
        raise Unresolved(f"Fn::{name}")

    def _secret(self, secret_id: str) -> str:
        if secret_id in self.secret_values:
            return self.secret_values[secret_id]
        raise Unresolved(f"secret {secret_id}")


def stack_parameters(template: dict, overrides: dict | None = None) -> dict:
    """Every parameter's value: the override, else LOCAL_PARAMETERS, else the
    template's default. Values are strings (lists for CommaDelimitedList)."""
    values = {}
    for name, spec in template.get("Parameters", {}).items():
        if overrides and name in overrides:
            value = overrides[name]
        elif name in LOCAL_PARAMETERS:
            value = LOCAL_PARAMETERS[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise SystemExit(f"aws-local: parameter {name} has no default: pass --parameter {name}=...")
        value = str(value)
        if spec.get("Type") == "CommaDelimitedList":
            value = [v.strip() for v in value.split(",")] if value else []
        values[name] = value
    for name in overrides or {}:
        if name not in values:
            raise SystemExit(f"aws-local: template.yaml has no parameter {name}")
    return values


# ------------------------------------------------------------------ AWS clients


def client(service: str, endpoint: str, region: str = REGION):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _generated_secret(spec: dict) -> str:
    """A value as GenerateSecretString describes it (length, exclusions)."""
    alphabet = string.ascii_letters + string.digits
    if not spec.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-./:;<=>?@[]^_`{|}~"
    if spec.get("ExcludeUppercase"):
        alphabet = "".join(c for c in alphabet if not c.isupper())
    if spec.get("ExcludeLowercase"):
        alphabet = "".join(c for c in alphabet if not c.islower())
    if spec.get("ExcludeNumbers"):
        alphabet = "".join(c for c in alphabet if not c.isdigit())
    alphabet = "".join(c for c in alphabet if c not in spec.get("ExcludeCharacters", ""))
    value = "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
    if "SecretStringTemplate" in spec:
        doc = json.loads(spec["SecretStringTemplate"])
        doc[spec["GenerateStringKey"]] = value
        return json.dumps(doc)
    return value


# ------------------------------------------------------------------ the stack


def _attribute(value) -> str:
    """An SQS attribute value: booleans as "true"/"false", numbers as text."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _name(props: dict, key: str, stack: str, logical: str, limit: int = 80) -> str:
    return str(props.get(key) or f"{stack}-{logical}")[:limit]


def create_stack(
    endpoint: str,
    stack: str = DEFAULT_STACK,
    parameters: dict | None = None,
    template_path: pathlib.Path = TEMPLATE,
    region: str = REGION,
) -> dict:
    """Creates in the moto at `endpoint` the resources template.yaml declares
    (CREATED_TYPES; the others are listed as skipped) and returns the state:
    the resources' names, ARNs and URLs, each function's environment, the
    consumers (queue -> function) and the relay's stream."""
    template = load_template(template_path)
    params = stack_parameters(template, parameters)
    r = Resolver(template, stack, params, region)
    resources = template["Resources"]
    created: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    c = {s: client(s, endpoint, region) for s in
         ("kms", "secretsmanager", "iam", "dynamodb", "events", "scheduler", "sqs", "sesv2")}

    def note(logical, kind, ref, **attrs):
        r.refs[logical] = ref
        r.attrs[logical] = attrs
        created[logical] = {"type": kind, "ref": ref, **attrs}

    by_type: dict[str, list] = {}
    for logical, resource in resources.items():
        if "Condition" in resource and not r.condition(resource["Condition"]):
            skipped[logical] = "condition false"
            continue
        if resource["Type"] in CREATED_TYPES:
            by_type.setdefault(resource["Type"], []).append(logical)
        elif resource["Type"] != "AWS::EventSchemas::Schema":
            skipped[logical] = resource["Type"]

    def props(logical):
        return resources[logical].get("Properties", {})

    for logical in by_type.get("AWS::KMS::Key", []):
        p = r.resolve({k: v for k, v in props(logical).items() if k in ("Description", "KeyUsage", "KeySpec")})
        meta = c["kms"].create_key(**p)["KeyMetadata"]
        note(logical, "AWS::KMS::Key", meta["KeyId"], Arn=meta["Arn"], KeyId=meta["KeyId"])
    for logical in by_type.get("AWS::KMS::Alias", []):
        p = r.resolve(props(logical))
        c["kms"].create_alias(AliasName=p["AliasName"], TargetKeyId=p["TargetKeyId"])
        note(logical, "AWS::KMS::Alias", p["AliasName"])
    for logical in by_type.get("AWS::SecretsManager::Secret", []):
        p = props(logical)
        name = _name(r.resolve(p), "Name", stack, logical)
        value = r.resolve(p["SecretString"]) if "SecretString" in p else _generated_secret(
            r.resolve(p.get("GenerateSecretString", {})))
        arn = c["secretsmanager"].create_secret(Name=name, SecretString=value)["ARN"]
        if logical in LOCAL_SECRET_VALUES:
            value = LOCAL_SECRET_VALUES[logical]
            c["secretsmanager"].put_secret_value(SecretId=arn, SecretString=value)
        r.secret_values[arn] = r.secret_values[name] = value
        note(logical, "AWS::SecretsManager::Secret", arn, Name=name, Id=arn)
    for logical in by_type.get("AWS::IAM::Role", []):
        p = props(logical)
        name = str(r.resolve(p["RoleName"])) if "RoleName" in p else f"{stack}-{logical}"[:64]
        role = c["iam"].create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(
            r.resolve(p["AssumeRolePolicyDocument"])))["Role"]
        note(logical, "AWS::IAM::Role", name, Arn=role["Arn"], RoleId=role["RoleId"])
    for logical in by_type.get("AWS::DynamoDB::Table", []):
        p = r.resolve(props(logical))
        name = _name(p, "TableName", stack, logical, 255)
        args = {"TableName": name, "AttributeDefinitions": p["AttributeDefinitions"], "KeySchema": p["KeySchema"],
                "BillingMode": p.get("BillingMode", "PROVISIONED")}
        if args["BillingMode"] == "PROVISIONED":
            args["ProvisionedThroughput"] = p.get("ProvisionedThroughput",
                                                  {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if key in p:
                args[key] = p[key]
        if "StreamSpecification" in p:
            args["StreamSpecification"] = {"StreamEnabled": True,
                                           "StreamViewType": p["StreamSpecification"]["StreamViewType"]}
        table = c["dynamodb"].create_table(**args)["TableDescription"]
        ttl = p.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            c["dynamodb"].update_time_to_live(TableName=name, TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"], "Enabled": True})
        note(logical, "AWS::DynamoDB::Table", name, Arn=table["TableArn"],
             StreamArn=table.get("LatestStreamArn"))
    for logical in by_type.get("AWS::Events::EventBus", []):
        name = _name(r.resolve(props(logical)), "Name", stack, logical)
        arn = c["events"].create_event_bus(Name=name)["EventBusArn"]
        note(logical, "AWS::Events::EventBus", name, Arn=arn, Name=name)
    for logical in by_type.get("AWS::Scheduler::ScheduleGroup", []):
        name = _name(r.resolve(props(logical)), "Name", stack, logical, 64)
        arn = c["scheduler"].create_schedule_group(Name=name)["ScheduleGroupArn"]
        note(logical, "AWS::Scheduler::ScheduleGroup", name, Arn=arn)
    queue_attributes = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "MaximumMessageSize",
                        "ReceiveMessageWaitTimeSeconds", "FifoQueue", "ContentBasedDeduplication")
    for logical in by_type.get("AWS::SQS::Queue", []):  # first pass: every queue, no redrive yet
        p = props(logical)
        name = str(r.resolve(p["QueueName"])) if "QueueName" in p else f"{stack}-{logical}"[:80]
        attributes = {k: _attribute(r.resolve(p[k])) for k in queue_attributes if k in p}
        url = c["sqs"].create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = c["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        note(logical, "AWS::SQS::Queue", url, Arn=arn, QueueName=name, QueueUrl=url)
    for logical in by_type.get("AWS::SQS::Queue", []):  # second pass: redrive policies to the queues above
        redrive = props(logical).get("RedrivePolicy")
        if redrive:
            policy = r.resolve(redrive)
            policy["maxReceiveCount"] = int(policy["maxReceiveCount"])
            c["sqs"].set_queue_attributes(QueueUrl=r.refs[logical], Attributes={"RedrivePolicy": json.dumps(policy)})
            created[logical]["RedrivePolicy"] = policy
    for logical in by_type.get("AWS::SES::ConfigurationSet", []):
        name = _name(r.resolve(props(logical)), "Name", stack, logical, 64)
        c["sesv2"].create_configuration_set(ConfigurationSetName=name)
        note(logical, "AWS::SES::ConfigurationSet", name)
    for logical in by_type.get("AWS::SES::EmailIdentity", []):
        p = r.resolve(props(logical))
        args = {"EmailIdentity": p["EmailIdentity"]}
        config_set = p.get("ConfigurationSetAttributes", {}).get("ConfigurationSetName")
        if config_set:
            args["ConfigurationSetName"] = config_set
        c["sesv2"].create_email_identity(**args)
        note(logical, "AWS::SES::EmailIdentity", p["EmailIdentity"])
    for logical in by_type.get("AWS::SES::ConfigurationSetEventDestination", []):
        p = r.resolve(props(logical))
        destination = dict(p["EventDestination"])
        name = destination.pop("Name", logical)
        try:
            c["sesv2"].create_configuration_set_event_destination(
                ConfigurationSetName=p["ConfigurationSetName"], EventDestinationName=name,
                EventDestination=destination)
            note(logical, "AWS::SES::ConfigurationSetEventDestination", name)
        except Exception as e:  # noqa: BLE001 - moto may not model it; nothing reads it locally
            skipped[logical] = f"moto refused it: {str(e).splitlines()[0][:160]}"
    rules = []
    for logical in by_type.get("AWS::Events::Rule", []):
        p = r.resolve(props(logical))
        name = _name(p, "Name", stack, logical, 64)
        bus = p.get("EventBusName", "default")
        args = {"Name": name, "EventBusName": bus, "State": p.get("State", "ENABLED")}
        for key in ("EventPattern", "ScheduleExpression", "Description"):
            if key in p:
                args[key] = json.dumps(p[key]) if key == "EventPattern" else p[key]
        arn = c["events"].put_rule(**args)["RuleArn"]
        targets = [{k: t[k] for k in ("Id", "Arn", "Input", "InputPath") if k in t} for t in p.get("Targets", [])]
        if targets:
            c["events"].put_targets(Rule=name, EventBusName=bus, Targets=targets)
        note(logical, "AWS::Events::Rule", name, Arn=arn, EventBusName=bus)
        rules.append({"rule": logical, "bus": bus, "targets": [t["Arn"] for t in targets]})

    state = {
        "stack": stack,
        "endpoint": endpoint,
        "region": region,
        "parameters": params,
        "resources": created,
        "skipped": skipped,
    }
    state.update(_functions(template, r, created, rules))
    return state


def _functions(template: dict, r: Resolver, created: dict, rules: list) -> dict:
    """Each function's binary and environment, the consumers (queue ->
    function, as the event source mappings read them) and the relay's stream."""
    resources = template["Resources"]
    globals_ = template.get("Globals", {}).get("Function", {})
    global_env = globals_.get("Environment", {}).get("Variables", {})
    functions, consumers, streams = {}, [], []
    queue_by_arn = {v["Arn"]: k for k, v in created.items() if v["type"] == "AWS::SQS::Queue"}
    for logical, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        p = resource.get("Properties", {})
        env = {**global_env, **p.get("Environment", {}).get("Variables", {})}
        functions[binary] = {
            "logical": logical,
            "environment": {k: str(r.resolve(v)) for k, v in env.items()},
            "timeout": int(r.resolve(p.get("Timeout", globals_.get("Timeout", 3)))),
            "memory": int(r.resolve(p.get("MemorySize", globals_.get("MemorySize", 128)))),
        }
        for event in p.get("Events", {}).values():
            e = event.get("Properties", {})
            if event["Type"] == "SQS":
                queue = queue_by_arn[r.resolve(e["Queue"])]
                redrive = created[queue].get("RedrivePolicy", {})
                dlq = queue_by_arn.get(redrive.get("deadLetterTargetArn"))
                consumers.append({
                    "function": binary,
                    "queue": queue,
                    "queue_url": created[queue]["QueueUrl"],
                    "queue_arn": created[queue]["Arn"],
                    "batch_size": int(r.resolve(e.get("BatchSize", 10))),
                    "dead_letter_queue": dlq,
                    "max_receive_count": redrive.get("maxReceiveCount"),
                })
            elif event["Type"] == "DynamoDB":
                filters = [json.loads(f["Pattern"]) for f in
                           r.resolve(e.get("FilterCriteria", {})).get("Filters", [])]
                streams.append({
                    "function": binary,
                    "stream_arn": r.resolve(e["Stream"]),
                    "batch_size": int(r.resolve(e.get("BatchSize", 100))),
                    "filters": filters,
                    "positions": {},
                })
    fed = {t for rule in rules for t in rule["targets"]}
    dead_letter_queues = {k: v["QueueUrl"] for k, v in created.items()
                          if v["type"] == "AWS::SQS::Queue" and v["Arn"] not in fed}
    return {"functions": functions, "consumers": consumers, "streams": streams,
            "dead_letter_queues": dead_letter_queues}


def function_environment(state: dict, binary: str, endpoint: str | None = None) -> dict:
    """What `binary` runs with: its variables from template.yaml, resolved,
    and the AWS endpoint (moto, or a proxy in front of it) and credentials.
    Harness only: `AWS_SDK_UA_APP_ID` = the binary's name, which the AWS SDK
    for Rust sends in its user agent as `app/<name>`, so that
    scripts/fault_proxy.py counts each request for the function that made it."""
    return {
        **state["functions"][binary]["environment"],
        "AWS_SDK_UA_APP_ID": binary,
        "AWS_ENDPOINT_URL": endpoint or state["endpoint"],
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": state["region"],
        "AWS_DEFAULT_REGION": state["region"],
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for_port(port: int, seconds: float, what: str, pid: int | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if pid is not None and not _alive(pid):
                raise RuntimeError(f"{what} exited before listening on 127.0.0.1:{port}")
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {seconds:.0f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of ours has exited
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _spawn(command: list, log_path: pathlib.Path, env: dict | None = None) -> int:
    """Starts `command` in its own process group (stopped with it by `stop`)."""
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=REPO, env=env, start_new_session=True)
    return process.pid


def _tool_path() -> str:
    """PATH with the venv's bin first (cargo-lambda, moto)."""
    return f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def start_moto(port: int, state_dir: pathlib.Path) -> int:
    """moto through scripts/moto_server.py (one request at a time, decision 0005)."""
    pid = _spawn([sys.executable, str(REPO / "scripts" / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
                 state_dir / "moto.log")
    wait_for_port(port, 60, "moto", pid)
    return pid


def _cargo_metadata() -> dict:
    return json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"], cwd=REPO,
                                     check=True, capture_output=True, text=True).stdout)


def cargo_packages(binaries, meta: dict | None = None) -> list:
    """The workspace packages that hold these binaries."""
    meta = meta or _cargo_metadata()
    wanted = set(binaries)
    return sorted({p["name"] for p in meta["packages"] for t in p["targets"]
                   if "bin" in t["kind"] and t["name"] in wanted})


def build_functions(state: dict, state_dir: pathlib.Path, features: str | None = None) -> dict:
    """Builds the functions' binaries (the first build takes minutes; cargo
    waits on the target dir's lock while another build runs) and copies them
    to `<state dir>/bin/`, so that what runs is this build, whatever is built
    in the shared target dir afterwards. {function: path}."""
    meta = _cargo_metadata()
    command = ["cargo", "build", "--bins"]
    for package in cargo_packages(state["functions"], meta):
        command += ["-p", package]
    if features:
        command += ["--features", features]
    log(" ".join(command))
    subprocess.run(command, cwd=REPO, check=True)
    bin_dir = state_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for binary in state["functions"]:
        built = pathlib.Path(meta["target_directory"]) / "debug" / binary
        copy = bin_dir / binary
        tmp = copy.with_suffix(".new")
        shutil.copy2(built, tmp)
        os.replace(tmp, copy)
        paths[binary] = str(copy)
    return paths


# Restarts the function after it exits (a crash, an abort), as Lambda starts a
# new execution environment, and appends its exit status to the exit log ($2):
# `cargo lambda watch` (1.9) never answers an invocation whose process died
# (it waits for the answer; the new process is not given it again), so
# `invoke` watches the exit log to learn of the crash.
# Each start is an execution environment of its own: AWS_LAMBDA_LOG_STREAM_NAME
# "<function>/<start>" (crash points draw their own sequence per environment).
_INSTANCE_LOOP = ('n=0; while :; do n=$((n + 1)); AWS_LAMBDA_LOG_STREAM_NAME="$0/$n" "$1"; code=$?; '
                  'echo "$code" >> "$2"; echo "aws-local: $0 exited ($code); starting it again" >&2; sleep 1; done')


def start_functions(state: dict, port: int, state_dir: pathlib.Path, binaries: dict,
                    endpoint: str | None = None, extra_env: dict | None = None) -> dict:
    """`cargo lambda watch --only-lambda-apis` on 127.0.0.1:`port` (the
    Lambda invoke and runtime APIs), and each function's binary (`binaries`,
    from `build_functions`) polling it as `/.rt/<function>`, with its own
    environment from template.yaml (they differ, e.g. DEAD_LETTER_QUEUE_URL)
    plus `extra_env` (e.g. the CRM_CRASH_* settings of a build with crash
    points), restarted when it exits. Returns {"port", "watch": pid,
    "instances": {function: pid}, "exits": {function: its exit log}}."""
    env = {**os.environ, "PATH": _tool_path()}
    watch = _spawn(["cargo", "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port)],
                   state_dir / "watch.log", env)
    try:
        wait_for_port(port, 120, "cargo lambda watch", watch)
    except BaseException:
        stop([watch])
        raise
    lam = {"port": port, "watch": watch, "instances": {}, "exits": {}}
    for binary, path in binaries.items():
        start_instance(state, lam, binary, path, state_dir, endpoint, extra_env)
    return lam


def start_instance(state: dict, lam: dict, binary: str, path: str, state_dir: pathlib.Path,
                   endpoint: str | None = None, extra_env: dict | None = None) -> int:
    """Starts (or, after `stop([lam["instances"][binary]])`, starts again)
    the function `binary` polling the Runtime API of `lam` (what
    `start_functions` returned, updated: its pid and exit log)."""
    fn = state["functions"][binary]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TZ": "UTC",
        **function_environment(state, binary, endpoint),
        **(extra_env or {}),
        "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{lam['port']}/.rt/{binary}",
        "AWS_LAMBDA_FUNCTION_NAME": binary,
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn["memory"]),
    }
    exits = state_dir / f"{binary}.exits"
    exits.touch()
    pid = _spawn(["sh", "-c", _INSTANCE_LOOP, binary, path, str(exits)], state_dir / f"{binary}.log", env)
    lam.setdefault("instances", {})[binary] = pid
    lam.setdefault("exits", {})[binary] = str(exits)
    return pid


def stop(pids) -> None:
    """Stops each process group we started (SIGTERM, then SIGKILL)."""
    pids = [p for p in pids if p]
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 10
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# ------------------------------------------------------------------ invoking


class InvokeError(RuntimeError):
    """The function failed (an error answer, not a batch item failure)."""


class InvocationCrashed(InvokeError):
    """The function's process exited during the invocation (an abort, a
    crash point): nothing was answered, as when Lambda loses an invocation."""


def _exit_count(exits: str) -> int:
    try:
        with open(exits, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def exits_of(state: dict, function: str) -> str | None:
    """The exit log of `function`'s process, if `start_functions` started it."""
    return state.get("lambda", {}).get("exits", {}).get(function)


def invoke(port: int, function: str, payload, timeout: float = 900, exits: str | None = None):
    """Invokes `function` through `cargo lambda watch` on `port`, as `cargo
    lambda invoke` does; its JSON answer. No answer within `timeout` seconds
    (the function crashed, or ran out of its time) is an InvokeError. With
    `exits` (the function's exit log, `exits_of`), a process that exits
    before answering is an InvocationCrashed at once: cargo lambda watch
    would never answer it."""
    if not exits:
        return _invoke(port, function, payload, timeout)
    before = _exit_count(exits)
    outcome: dict = {}

    def run():
        try:
            outcome["answer"] = _invoke(port, function, payload, timeout)
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=run, name=f"invoke {function}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
        if worker.is_alive() and _exit_count(exits) > before:
            # The request stays open in its thread until `timeout`: cargo
            # lambda watch does not answer it, nor hand it to the new process.
            raise InvocationCrashed(f"{function}: the process exited during the invocation (no answer)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("answer")


def _invoke(port: int, function: str, payload, timeout: float):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/2015-03-31/functions/{function}/invocations",
        data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read().decode()
    except urllib.error.HTTPError as e:
        raise InvokeError(f"{function}: {e.code} {e.read().decode(errors='replace')[:1000]}") from None
    except (TimeoutError, urllib.error.URLError) as e:
        raise InvokeError(f"{function}: no answer ({e})") from None
    return json.loads(text) if text.strip() else None


def _time_limit(state: dict, function: str) -> float:
    """How long the pump waits for an answer: the function's Timeout, plus
    the emulator's overhead."""
    return state["functions"][function]["timeout"] + 15


def sqs_event(messages: list, queue_arn: str, region: str = REGION) -> dict:
    """The SQS event an event source mapping hands a function: each message
    as received (body, messageId, receiptHandle, attributes)."""
    records = []
    for m in messages:
        attributes = dict(m.get("Attributes", {}))
        records.append({
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": attributes,
            "messageAttributes": {
                k: {"stringValue": v.get("StringValue"), "binaryValue": v.get("BinaryValue"),
                    "stringListValues": [], "binaryListValues": [], "dataType": v["DataType"]}
                for k, v in m.get("MessageAttributes", {}).items()},
            "md5OfBody": m.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        })
    return {"Records": records}


def matches(pattern, event) -> bool:
    """EventBridge / Lambda filter pattern matching (exact values, prefix,
    exists, anything-but, numeric equality, $or): enough for template.yaml."""
    if "$or" in pattern:
        rest = {k: v for k, v in pattern.items() if k != "$or"}
        return matches(rest, event) and any(matches(p, event) for p in pattern["$or"])
    for key, expected in pattern.items():
        value = event.get(key) if isinstance(event, dict) else None
        if isinstance(expected, dict):
            if not isinstance(value, dict) or not matches(expected, value):
                return False
            continue
        values = value if isinstance(value, list) else [value]
        if not any(_matches_one(e, v, key in event if isinstance(event, dict) else False)
                   for e in expected for v in values):
            return False
    return True


def _matches_one(expected, value, present: bool) -> bool:
    if not isinstance(expected, dict):
        return present and expected == value
    if "exists" in expected:
        return present == expected["exists"]
    if "prefix" in expected:
        return isinstance(value, str) and value.startswith(expected["prefix"])
    if "anything-but" in expected:
        but = expected["anything-but"]
        return present and value not in (but if isinstance(but, list) else [but])
    if "numeric" in expected and expected["numeric"][:1] == ["="]:
        return present and value == expected["numeric"][1]
    raise ValueError(f"filter operator not modelled: {expected}")


def _stream_record(record: dict, stream_arn: str) -> dict:
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if hasattr(created, "timestamp"):
        dynamodb["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion", REGION),
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }


@dataclass
class PumpCounts:
    rounds: int = 0
    timers_fired: int = 0
    relayed: int = 0
    filtered_out: int = 0
    delivered: dict = field(default_factory=dict)
    reported_failed: dict = field(default_factory=dict)
    invocation_errors: dict = field(default_factory=dict)
    crashed: dict = field(default_factory=dict)
    dead_letters: dict = field(default_factory=dict)
    in_flight: int = 0

    def add(self, table: dict, key: str, n: int) -> None:
        if n:
            table[key] = table.get(key, 0) + n

    def summary(self) -> str:
        lines = [f"fired {self.timers_fired} timers; relayed {self.relayed} stream records "
                 f"({self.filtered_out} filtered out) in {self.rounds} rounds",
                 f"delivered {self.delivered or 'nothing'}"]
        if self.reported_failed:
            lines.append(f"reported failed (batchItemFailures): {self.reported_failed}")
        if self.invocation_errors:
            lines.append(f"failed invocations: {self.invocation_errors}")
        if self.crashed:
            lines.append(f"of which the process crashed: {self.crashed}")
        lines.append(f"in flight: {self.in_flight}; in dead-letter queues: {self.dead_letters or 'none'}")
        return "\n".join(lines)


def relay_streams(state: dict, port: int, counts: PumpCounts) -> int:
    """Reads every new record of the stream(s) and invokes the stream's
    function with the records its mapping's filter lets through, in batches
    of its batch size. A batch item failure (or a failed invocation) stops
    the shard at that record, to be read again next time. Positions are kept
    in `state["streams"][i]["positions"]`."""
    streams = client("dynamodbstreams", state["endpoint"], state["region"])
    relayed = 0
    for source in state["streams"]:
        before = relayed
        arn = source["stream_arn"]
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            shard_id = shard["ShardId"]
            after = source["positions"].get(shard_id)
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard_id,
                **({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after} if after
                   else {"ShardIteratorType": "TRIM_HORIZON"}))["ShardIterator"]
            while iterator:
                page = streams.get_records(ShardIterator=iterator, Limit=source["batch_size"])
                records = page.get("Records", [])
                if not records:
                    break
                batch = [_stream_record(rec, arn) for rec in records]
                chosen = [rec for rec in batch if not source["filters"] or any(matches(f, rec)
                                                                              for f in source["filters"])]
                counts.filtered_out += len(batch) - len(chosen)
                failed_at = None
                if chosen:
                    try:
                        answer = invoke(port, source["function"], {"Records": chosen},
                                        _time_limit(state, source["function"]),
                                        exits=exits_of(state, source["function"])) or {}
                        failures = [f["itemIdentifier"] for f in answer.get("batchItemFailures", [])]
                    except InvokeError as e:
                        log(str(e))
                        counts.add(counts.invocation_errors, source["function"], 1)
                        if isinstance(e, InvocationCrashed):
                            counts.add(counts.crashed, source["function"], 1)
                        failures = [chosen[0]["dynamodb"]["SequenceNumber"]]
                    if failures:
                        counts.add(counts.reported_failed, source["function"], len(failures))
                        failed_at = min(failures, key=int)
                if failed_at is not None:
                    done = [rec for rec in batch if int(rec["dynamodb"]["SequenceNumber"]) < int(failed_at)]
                    relayed += len([rec for rec in chosen if rec in done])
                    if done:
                        source["positions"][shard_id] = done[-1]["dynamodb"]["SequenceNumber"]
                    break
                relayed += len(chosen)
                source["positions"][shard_id] = batch[-1]["dynamodb"]["SequenceNumber"]
                iterator = page.get("NextShardIterator")
        counts.add(counts.delivered, source["function"], relayed - before)
    counts.relayed += relayed
    return relayed


_AT = re.compile(r"^at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)$")


def fire_timers(state: dict, counts: PumpCounts, until: datetime.datetime | None = None) -> int:
    """Plays EventBridge Scheduler, which moto does not run: every one-time
    schedule (`at(...)`, UTC) of the stack's schedule groups due by `until`
    (default now) puts its target's event on its bus (source and detail-type
    from EventBridgeParameters, detail = the Input), then is deleted
    (ActionAfterCompletion DELETE, what the scheduler adapter asks for) or
    remembered in `state["fired_timers"]` so it fires once."""
    until = until or datetime.datetime.now(datetime.timezone.utc)
    scheduler = client("scheduler", state["endpoint"], state["region"])
    events = client("events", state["endpoint"], state["region"])
    fired_before = state.setdefault("fired_timers", [])
    fired = 0
    groups = [v["ref"] for v in state["resources"].values() if v["type"] == "AWS::Scheduler::ScheduleGroup"]
    for group in groups:
        names, token = [], None
        while True:
            page = scheduler.list_schedules(GroupName=group, **({"NextToken": token} if token else {}))
            names += [s["Name"] for s in page.get("Schedules", [])]
            token = page.get("NextToken")
            if not token:
                break
        for name in names:
            if f"{group}/{name}" in fired_before:
                continue
            schedule = scheduler.get_schedule(Name=name, GroupName=group)
            at = _AT.match(schedule.get("ScheduleExpression", ""))
            if not at or schedule.get("State", "ENABLED") != "ENABLED":
                continue
            due = datetime.datetime.fromisoformat(at.group(1)).replace(tzinfo=datetime.timezone.utc)
            if due > until:
                continue
            target = schedule["Target"]
            parameters = target.get("EventBridgeParameters", {})
            answer = events.put_events(Entries=[{
                "EventBusName": target["Arn"], "Source": parameters.get("Source", "aws.scheduler"),
                "DetailType": parameters.get("DetailType", "Scheduled Event"), "Detail": target.get("Input", "{}"),
            }])
            if answer.get("FailedEntryCount"):
                log(f"timer {group}/{name} not put on the bus: {answer['Entries']}")
                continue
            if schedule.get("ActionAfterCompletion") == "DELETE":
                scheduler.delete_schedule(Name=name, GroupName=group)
            else:
                fired_before.append(f"{group}/{name}")
            fired += 1
    counts.timers_fired += fired
    return fired


def deliver_queue(state: dict, consumer: dict, port: int, counts: PumpCounts) -> int:
    """Plays the queue's event source mapping until the queue shows nothing:
    receives up to the mapping's batch size, invokes the function with them
    as one SQS batch, and deletes the messages not reported as failed."""
    sqs = client("sqs", state["endpoint"], state["region"])
    url, function = consumer["queue_url"], consumer["function"]
    delivered = 0
    while True:
        messages = []
        while len(messages) < consumer["batch_size"]:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=min(10, consumer["batch_size"] - len(messages)),
                                      WaitTimeSeconds=0, AttributeNames=["All"], MessageAttributeNames=["All"])
            if not got.get("Messages"):
                break
            messages += got["Messages"]
        if not messages:
            return delivered
        try:
            answer = invoke(port, function, sqs_event(messages, consumer["queue_arn"], state["region"]),
                            _time_limit(state, function), exits=exits_of(state, function)) or {}
        except InvokeError as e:  # the whole batch comes back after the visibility timeout
            log(str(e))
            counts.add(counts.invocation_errors, function, 1)
            if isinstance(e, InvocationCrashed):
                counts.add(counts.crashed, function, 1)
            continue
        failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for i in range(0, len(done), 10):
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(done[i:i + 10])])
        delivered += len(done)
        counts.add(counts.delivered, function, len(done))
        counts.add(counts.reported_failed, function, len(failed))


def queue_depths(state: dict) -> dict:
    """{queue logical name: (visible, in flight)} for every queue of the stack."""
    sqs = client("sqs", state["endpoint"], state["region"])
    depths = {}
    for logical, resource in state["resources"].items():
        if resource["type"] == "AWS::SQS::Queue":
            a = sqs.get_queue_attributes(QueueUrl=resource["QueueUrl"], AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            depths[logical] = (int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"]))
    return depths


def pump(state: dict, port: int | None = None, rounds: int = 20, wait: bool = True,
         timers_until: datetime.datetime | None = None, fire: bool = True,
         each_round=None) -> PumpCounts:
    """Plays the event sources for up to `rounds` rounds. A round first calls
    `each_round()` if given (what else the world does meanwhile, such as SES's
    feedback, which AWS delivers within seconds; it returns how much it moved),
    then fires the timers due by `timers_until` (default: now; `fire=False`:
    none), relays the stream and drains every consumer queue. When a round
    moves nothing but messages are in flight (reported as failed), the next
    round waits until they are visible again (the queue's visibility timeout);
    it stops when nothing moves and nothing is in flight."""
    port = port or state["lambda"]["port"]
    counts = PumpCounts()
    consumer_queues = {c["queue"] for c in state["consumers"]}
    for n in range(rounds):
        counts.rounds = n + 1
        moved = each_round() if each_round else 0
        moved += fire_timers(state, counts, timers_until) if fire else 0
        moved += relay_streams(state, port, counts)
        for consumer in state["consumers"]:
            moved += deliver_queue(state, consumer, port, counts)
        if moved:
            continue
        depths = queue_depths(state)
        in_flight = sum(depths[q][1] for q in consumer_queues)
        if not in_flight or not wait or n == rounds - 1:
            break
        deadline = time.monotonic() + max(_visibility_timeout(state, q) for q in consumer_queues) + 5
        while time.monotonic() < deadline:
            depths = queue_depths(state)
            if any(depths[q][0] for q in consumer_queues) or not any(depths[q][1] for q in consumer_queues):
                break
            time.sleep(0.5)
    depths = queue_depths(state)
    counts.in_flight = sum(depths[q][1] for q in consumer_queues)
    counts.dead_letters = {q: sum(depths[q]) for q in state["dead_letter_queues"] if sum(depths[q])}
    return counts


def _visibility_timeout(state: dict, queue: str) -> int:
    sqs = client("sqs", state["endpoint"], state["region"])
    a = sqs.get_queue_attributes(QueueUrl=state["resources"][queue]["QueueUrl"],
                                 AttributeNames=["VisibilityTimeout"])["Attributes"]
    return int(a["VisibilityTimeout"])


def send(state: dict, function: str, body) -> str:
    """Puts `body` (an EventBridge event, as a rule delivers it) on the queue
    `function` reads; its message id."""
    queues = [c["queue_url"] for c in state["consumers"] if c["function"] == function]
    if not queues:
        raise SystemExit(f"aws-local: {function} reads no queue; queue-fed: "
                         f"{sorted(c['function'] for c in state['consumers'])}")
    sqs = client("sqs", state["endpoint"], state["region"])
    text = body if isinstance(body, str) else json.dumps(body)
    return sqs.send_message(QueueUrl=queues[0], MessageBody=text)["MessageId"]


# ------------------------------------------------------------------ state and CLI


def state_file(state_dir: pathlib.Path) -> pathlib.Path:
    return state_dir / "state.json"


def load_state(state_dir: pathlib.Path) -> dict:
    path = state_file(state_dir)
    if not path.exists():
        raise SystemExit(f"aws-local: no {path}: run `scripts/aws-local up` first")
    return json.loads(path.read_text())


def save_state(state_dir: pathlib.Path, state: dict) -> None:
    path = state_file(state_dir)
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def pids(state: dict) -> list:
    """The process groups `up` started: the functions, cargo lambda watch, moto."""
    lam = state.get("lambda", {})
    return list(lam.get("instances", {}).values()) + [lam.get("watch"), state.get("moto_pid")]


def usage_text(state: dict, state_dir: pathlib.Path) -> str:
    port, endpoint = state["lambda"]["port"], state["endpoint"]
    rel = os.path.relpath(state_dir) if state_dir.resolve().is_relative_to(pathlib.Path.cwd()) else state_dir
    consumers = ", ".join(f"{c['function']} <- {c['queue']}" for c in state["consumers"])
    port_flag = " --invoke-address 127.0.0.1" + ("" if port == 9000 else f" --invoke-port {port}")
    return f"""
Stack {state['stack']} is up: moto at {endpoint}, functions at 127.0.0.1:{port}
  functions: {' '.join(state['functions'])}
  consumers: {consumers}

Invoke a function with a sample event:
  cargo lambda invoke api{port_flag} --data-file events/api/01-register-customer.json
  cargo lambda invoke api{port_flag} --data-file events/api/17-find-by-email.json  # after a pump
  cargo lambda invoke campaign{port_flag} --data-file <an SQS batch: {{"Records": [...]}}>
Carry what was stored through the stream, the relay, the bus, the rules and the queues:
  scripts/aws-local pump                 # timers fired, relayed, delivered per function, failures, dead letters
  scripts/aws-local pump --timers-ahead 2h  # also the timers due in the next two hours
Put a message on a consumer's queue (an EventBridge event, as the rule delivers it), then pump:
  scripts/aws-local send campaign events/campaign/cart-abandoned.json && scripts/aws-local pump
Queue depths:  scripts/aws-local status
AWS CLI/boto3: eval "$(scripts/aws-local env)"; aws dynamodb scan --table-name {state['resources'].get('ReadModelsTable', {}).get('ref', '...')}
State: {rel}/state.json   logs: {rel}/*.log   stop: scripts/aws-local down
"""


def cmd_up(args) -> int:
    state_dir = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    if state_file(state_dir).exists():
        old = json.loads(state_file(state_dir).read_text())
        if any(p and _alive(p) for p in pids(old)):
            raise SystemExit(f"aws-local: already up ({state_file(state_dir)}); `scripts/aws-local down` first")
    overrides = dict(kv.split("=", 1) for kv in args.parameter)
    if args.visibility_timeout is not None:
        overrides["ConsumerVisibilityTimeoutSeconds"] = str(args.visibility_timeout)
    if args.max_receive_count is not None:
        overrides["ConsumerMaxReceiveCount"] = str(args.max_receive_count)
    moto_port = args.moto_port or free_port()
    for port, what in ((args.port, "--port"), (moto_port, "--moto-port")):
        if not port_is_free(port):
            raise SystemExit(f"aws-local: 127.0.0.1:{port} ({what}) is in use; choose another port")
    state = {"stack": args.stack}
    started: list = []
    try:
        log(f"moto on 127.0.0.1:{moto_port}")
        moto_pid = start_moto(moto_port, state_dir)
        started.append(moto_pid)
        endpoint = f"http://127.0.0.1:{moto_port}"
        state = create_stack(endpoint, args.stack, overrides)
        state["moto_pid"] = moto_pid
        made = [k for k in state["resources"]]
        log(f"created {len(made)} resources of template.yaml in moto: {' '.join(made)}")
        save_state(state_dir, state)
        binaries = build_functions(state, state_dir, args.features)
        log(f"cargo lambda watch on 127.0.0.1:{args.port}; functions {' '.join(binaries)}")
        extra_env = dict(kv.split("=", 1) for kv in args.env)
        state["lambda"] = start_functions(state, args.port, state_dir, binaries, extra_env=extra_env)
        started = pids(state)
        save_state(state_dir, state)
    except subprocess.CalledProcessError as e:
        stop(started)
        raise SystemExit(f"aws-local: `{' '.join(e.cmd)}` failed (exit {e.returncode}); stopped what up started")
    except BaseException:
        stop(started)
        raise
    print(usage_text(state, state_dir))
    return 0


def _duration(text: str) -> datetime.timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if not match:
        raise SystemExit(f"aws-local: {text!r} is not a duration like 90s, 15m, 2h or 3d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return datetime.timedelta(**{unit: int(match.group(1))})


def cmd_pump(args) -> int:
    state = load_state(args.state_dir)
    until = datetime.datetime.now(datetime.timezone.utc) + _duration(args.timers_ahead)
    counts = pump(state, rounds=args.rounds, wait=not args.no_wait, timers_until=until, fire=not args.no_timers)
    save_state(args.state_dir, state)  # the stream positions
    print(counts.summary())
    return 0


def cmd_send(args) -> int:
    state = load_state(args.state_dir)
    message_id = send(state, args.function, pathlib.Path(args.file).read_text())
    print(f"sent {args.file} to {args.function}'s queue as message {message_id}")
    return 0


def cmd_status(args) -> int:
    state = load_state(args.state_dir)
    for queue, (visible, in_flight) in sorted(queue_depths(state).items()):
        kind = "dead letters" if queue in state["dead_letter_queues"] else "queue"
        print(f"{queue:32} {kind:13} visible {visible:5}  in flight {in_flight:5}")
    return 0


def cmd_env(args) -> int:
    state = load_state(args.state_dir)
    for key, value in {"AWS_ENDPOINT_URL": state["endpoint"], "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": state["region"],
                       "AWS_DEFAULT_REGION": state["region"]}.items():
        print(f"export {key}={value}")
    return 0


def cmd_down(args) -> int:
    path = state_file(args.state_dir)
    if not path.exists():
        log("nothing to stop")
        return 0
    stop(pids(json.loads(path.read_text())))
    path.unlink()
    log("stopped")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="aws-local", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("CRM_AWS_LOCAL_DIR", DEFAULT_STATE_DIR)))
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start moto, create the stack, run the functions")
    up.add_argument("--port", type=int, default=9000, help="invoke port (cargo lambda invoke --invoke-port)")
    up.add_argument("--moto-port", type=int, default=0, help="moto's port (default: a free one)")
    up.add_argument("--stack", default=DEFAULT_STACK, help="stack name: the prefix of every resource name")
    up.add_argument("--visibility-timeout", type=int, help="ConsumerVisibilityTimeoutSeconds (template: 180)")
    up.add_argument("--max-receive-count", type=int, help="ConsumerMaxReceiveCount (template: 5)")
    up.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                    help="a template parameter (repeatable)")
    up.add_argument("--features", help="cargo features for the function builds (crash-points: crm-core's "
                    "crash points, armed by --env CRM_CRASH_RATE=0.05 [CRM_CRASH_POINTS=a,b] [CRM_CRASH_SEED=7])")
    up.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for every function, over template.yaml's (repeatable)")
    p = sub.add_parser("pump", help="relay the stream and deliver the queues to the functions")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--no-wait", action="store_true", help="do not wait for failed messages to come back")
    p.add_argument("--timers-ahead", default="0s", metavar="DURATION",
                   help="also fire the timers due within this long (e.g. 2h: a cart abandoned now)")
    p.add_argument("--no-timers", action="store_true", help="fire no timer")
    s = sub.add_parser("send", help="put an EventBridge event on a consumer's queue")
    s.add_argument("function")
    s.add_argument("file")
    sub.add_parser("status", help="queue and dead-letter depths")
    sub.add_parser("env", help="export lines for the AWS CLI / boto3 against this moto")
    sub.add_parser("down", help="stop what up started")
    args = parser.parse_args(argv)
    return {"up": cmd_up, "pump": cmd_pump, "send": cmd_send, "status": cmd_status, "env": cmd_env,
            "down": cmd_down}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
