"""An independent gRPC client for iamd: Python grpcio, with no generated code.

It learns the API from the server itself (server reflection), builds the
request and response classes from the descriptors it receives, and checks
Allow / ExplicitDeny / ImplicitDeny on the example store, plus health.

Usage: python3 grpc_client.py HOST:PORT
"""

import sys

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

F = "arn:aws:lambda:us-east-1:111122223333:function"
ALICE = "arn:aws:iam::111122223333:user/alice"


def main(addr: str) -> int:
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=10)

    reflection_db = ProtoReflectionDescriptorDatabase(channel)
    services = set(reflection_db.get_services())
    for want in ("iamd.v1.Authorizer", "grpc.health.v1.Health"):
        assert want in services, f"{want} not in {services}"

    pool = descriptor_pool.DescriptorPool(reflection_db)
    service = pool.FindServiceByName("iamd.v1.Authorizer")
    method = service.FindMethodByName("Authorize")
    Request = GetMessageClass(method.input_type)
    Response = GetMessageClass(method.output_type)
    decision_enum = pool.FindEnumTypeByName("iamd.v1.Decision")

    authorize = channel.unary_unary(
        "/iamd.v1.Authorizer/Authorize",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )

    def decide(principal, action, resource, context=None, explain=False):
        req = Request(principal=principal, action=action, resource=resource, explain=explain)
        for key, values in (context or {}).items():
            req.context[key].values.extend(values)
        resp = authorize(req, timeout=10)
        return decision_enum.values_by_number[resp.decision].name, resp

    checks = 0
    name, resp = decide(ALICE, "lambda:ListFunctions", "*")
    assert name == "ALLOW", (name, resp)
    assert resp.revision >= 1
    checks += 1

    name, resp = decide(ALICE, "lambda:DeleteFunction", f"{F}:HelloWorld:prod")
    assert name == "EXPLICIT_DENY", (name, resp)
    assert resp.message.endswith("with an explicit deny in an identity-based policy"), resp.message
    checks += 1

    name, resp = decide("arn:aws:iam::444455556666:user/erin", "sts:AssumeRole",
                        "arn:aws:iam::111122223333:role/lambda-cross-account", explain=True)
    assert name == "IMPLICIT_DENY", (name, resp)
    assert "because no identity-based policy allows the sts:AssumeRole action" in resp.message
    assert any(s.policy_type == "role-trust" for s in resp.explanation.matched_statements), resp
    checks += 1

    name, resp = decide("s3.amazonaws.com", "lambda:InvokeFunction", f"{F}:HelloWorld",
                        {"aws:SourceAccount": ["111122223333"], "aws:SourceArn": ["arn:aws:s3:::ExampleBucket"]})
    assert name == "ALLOW", (name, resp)
    checks += 1

    try:
        decide("", "lambda:InvokeFunction", f"{F}:HelloWorld")
        raise AssertionError("an empty principal was accepted")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        assert "principal" in err.details(), err.details()
    checks += 1

    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="iamd.v1.Authorizer"), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING, status
    checks += 1

    print(f"{checks} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
