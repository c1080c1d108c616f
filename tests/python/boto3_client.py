"""boto3 against Envoy + iamd: allowed calls succeed, denied ones raise
AccessDeniedException carrying iamd's AWS-style message.

The principal travels in the trusted x-iamd-principal header, which the
mesh would set; here a botocore event hook plays the mesh.

Usage: python3 boto3_client.py http://127.0.0.1:PORT
"""

import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

F = "arn:aws:lambda:us-east-1:111122223333:function"


def client_as(endpoint, principal):
    client = boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="example-secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )

    def add_principal(request, **_):
        request.headers["x-iamd-principal"] = principal

    client.meta.events.register("before-sign.lambda.*", add_principal)
    return client


def expect_denied(call, message_part):
    try:
        call()
    except ClientError as err:
        error = err.response["Error"]
        assert error["Code"] == "AccessDeniedException", err.response
        assert message_part in error["Message"], (message_part, error["Message"])
        assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        return
    raise AssertionError("the call was allowed")


def main(endpoint):
    checks = 0
    alice = client_as(endpoint, "arn:aws:iam::111122223333:user/alice")
    resp = alice.invoke(FunctionName="HelloWorld", Payload=b"{}")
    assert resp["StatusCode"] == 200, resp
    checks += 1

    assert alice.list_functions()["Functions"] == []
    checks += 1

    erin = client_as(endpoint, "arn:aws:iam::444455556666:user/erin")
    expect_denied(
        lambda: erin.invoke(FunctionName="HelloWorld", Payload=b"{}"),
        "User: arn:aws:iam::444455556666:user/erin is not authorized to perform: "
        f"lambda:InvokeFunction on resource: {F}:HelloWorld because no identity-based policy "
        "allows the lambda:InvokeFunction action",
    )
    checks += 1

    expect_denied(
        lambda: alice.delete_function(FunctionName="HelloWorld", Qualifier="prod"),
        "with an explicit deny in an identity-based policy",
    )
    checks += 1

    print(f"{checks} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
