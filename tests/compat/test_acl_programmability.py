"""The preview Azure Confidential Ledger Python SDK (azure-confidentialledger 2.0.0b2,
PyPI, pinned in requirements-preview.txt) against `covenant dev`: ACL's programmability
routes (user defined endpoints, JS runtime options, user defined functions).

Run by scripts/compat-acl-preview, which passes the binary in COVENANT_BIN. Every call
goes through the SDK's own operations, models and error mapping; the deployed
endpoints themselves are called with `requests` and the client certificate.
"""

import os
import subprocess
import tempfile
import time

import pytest
import requests

import devserver
from azure.confidentialledger import (
    ConfidentialLedgerCertificateCredential,
    ConfidentialLedgerClient,
)
from azure.confidentialledger import models
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from cryptography import x509
from cryptography.hazmat.primitives import hashes


@pytest.fixture(scope="module")
def dev():
    binary = os.environ["COVENANT_BIN"]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "dev")
        port = devserver.port_range(1)
        proc, _ = devserver.start(
            [binary, "dev", "--data-dir", data, "--port", str(port), "--sig-ms-interval", "100"],
            timeout=30,
        )
        yield {
            "endpoint": f"https://127.0.0.1:{port}",
            "dir": data,
            "tmp": tmp,
            "user0": os.path.join(data, "user0.pem"),
            "service_cert": os.path.join(data, "service_cert.pem"),
        }
        out = devserver.stop(proc)
        assert "flushed" in out, out


def _client(dev, cert_path: str) -> ConfidentialLedgerClient:
    return ConfidentialLedgerClient(
        endpoint=dev["endpoint"],
        credential=ConfidentialLedgerCertificateCredential(certificate_path=cert_path),
        ledger_certificate_path=dev["service_cert"],
    )


@pytest.fixture(scope="module")
def client(dev):
    """user0: the Administrator `covenant dev` makes."""
    return _client(dev, dev["user0"])


def _fingerprint(cert_pem_path: str) -> str:
    """An ACL certificate user's id: the SHA-256 of the DER certificate, colon hex."""
    with open(cert_pem_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


@pytest.fixture(scope="module")
def reader(dev):
    """A Reader certificate user, made with `covenant keygen` and `covenant users set`."""
    binary = os.environ["COVENANT_BIN"]
    keys = os.path.join(dev["tmp"], "reader-keys")
    out = subprocess.run(
        [binary, "keygen", "--name", "reader", "--dir", keys],
        check=True, capture_output=True, text=True,
    ).stdout
    cert_path = os.path.join(keys, "reader_cert.pem")
    assert cert_path in out, out
    fingerprint = _fingerprint(cert_path)
    subprocess.run(
        [binary, "users", "set", fingerprint, "--role", "Reader",
         "--endpoint", dev["endpoint"], "--service-cert", dev["service_cert"], "--cert", dev["user0"]],
        check=True, capture_output=True, text=True,
    )
    combined = os.path.join(keys, "reader.pem")
    with open(combined, "w") as f, open(cert_path) as c, open(os.path.join(keys, "reader_privk.pem")) as k:
        f.write(c.read() + k.read())
    return {"client": _client(dev, combined), "fingerprint": fingerprint, "pem": combined}


def _call(dev, method: str, path: str, cert: str = None, **kwargs) -> requests.Response:
    return requests.request(
        method, dev["endpoint"] + path, cert=cert or dev["user0"], verify=dev["service_cert"],
        timeout=30, **kwargs,
    )


HELLO_JS = """
export function hello(request) {
  return { body: { greeting: "hello", query: request.query, policy: request.caller.policy,
                   caller: request.caller.id } };
}

export function put_note(request) {
  ccf.kv["notes"].set(ccf.strToBuf(request.params.id), ccf.strToBuf(request.body.text()));
  return { statusCode: 204 };
}

export function get_note(request) {
  const v = ccf.kv["notes"].get(ccf.strToBuf(request.params.id));
  if (v === undefined) {
    return { statusCode: 404, body: { error: "no note " + request.params.id } };
  }
  return { body: { id: request.params.id, text: ccf.bufToStr(v) } };
}
"""

UTIL_JS = "export const PREFIX = 'util';\n"


def _props(function: str, mode: str = "readonly") -> dict:
    return {
        "js_module": "hello.js",
        "js_function": function,
        "authn_policies": ["user_cert"],
        "forwarding_required": "sometimes",
        "mode": mode,
        "openapi": {},
    }


BUNDLE = {
    "metadata": {
        "endpoints": {
            "/hello": {"get": _props("hello")},
            "/notes/{id}": {"put": _props("put_note", "readwrite"), "get": _props("get_note")},
        }
    },
    "modules": [
        {"name": "hello.js", "module": HELLO_JS},
        {"name": "util.js", "module": UTIL_JS},
    ],
}


def test_deploy_call_and_read_back_endpoints(dev, client):
    # Before anything is deployed: an empty bundle.
    empty = client.get_user_defined_endpoint()
    assert empty["metadata"]["endpoints"] == {}
    assert empty["modules"] == []

    assert client.create_user_defined_endpoint(BUNDLE) is None

    # The endpoints answer under /app.
    r = _call(dev, "GET", "/app/hello?x=1")
    assert r.status_code == 200, r.text
    assert r.json()["greeting"] == "hello"
    assert r.json()["query"] == "x=1"
    assert r.json()["policy"] == "user_cert"
    assert r.json()["caller"]
    r = _call(dev, "GET", "/app/notes/n1")
    assert r.status_code == 404, r.text
    r = _call(dev, "PUT", "/app/notes/n1", data="first note", headers={"content-type": "text/plain"})
    assert r.status_code == 204, r.text
    r = _call(dev, "GET", "/app/notes/n1")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "n1", "text": "first note"}

    # Read back through the SDK: the same endpoints and modules.
    got = client.get_user_defined_endpoint()
    assert isinstance(got, models.Bundle)
    assert got["metadata"]["endpoints"]["/hello"]["get"]["js_function"] == "hello"
    assert got["metadata"]["endpoints"]["/notes/{id}"]["put"]["mode"] == "readwrite"
    assert {m["name"]: m["module"] for m in got["modules"]} == {
        "hello.js": HELLO_JS, "util.js": UTIL_JS}
    assert got["metadata"]["endpoints"] == BUNDLE["metadata"]["endpoints"]
    # The SDK's typed view of the same answer.
    hello = got.metadata.endpoints["/hello"].get_property
    assert hello.js_module == "hello.js"
    assert hello.js_function == "hello"
    assert hello.mode == models.Mode.READONLY
    assert hello.forwarding_required == models.ForwardingRequired.SOMETIMES
    assert got.metadata.endpoints["/notes/{id}"].put.js_function == "put_note"
    assert sorted(m.name for m in got.modules) == ["hello.js", "util.js"]

    # One module.
    module = client.get_user_defined_endpoints_module(module_name="util.js")
    assert isinstance(module, models.ModuleDef)
    assert module.name == "util.js"
    assert module.module == UTIL_JS
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_user_defined_endpoints_module(module_name="nope.js")
    assert missing.value.status_code == 404
    assert missing.value.error.code == "ModuleNotFound"


def test_redeploy_with_models_replaces_the_bundle(dev, client):
    """The SDK's own models as the request body; a new bundle replaces the old one."""
    bundle = models.Bundle(
        metadata=models.Metadata(endpoints={
            "/hello": models.MethodToEndpointProperties(get_property=models.EndpointProperties(
                js_module="v2.js", js_function="hello", authn_policies=["user_cert"],
                forwarding_required=models.ForwardingRequired.NEVER, mode=models.Mode.READONLY)),
        }),
        modules=[models.ModuleDef(name="v2.js", module="export function hello() { return { body: 'v2' }; }")],
    )
    client.create_user_defined_endpoint(bundle)
    r = _call(dev, "GET", "/app/hello")
    assert r.status_code == 200, r.text
    assert r.text == "v2"
    assert _call(dev, "GET", "/app/notes/n1").status_code == 404
    got = client.get_user_defined_endpoint()
    assert [m.name for m in got.modules] == ["v2.js"]
    assert list(got.metadata.endpoints) == ["/hello"]
    assert got.metadata.endpoints["/hello"].get_property.forwarding_required == "never"
    # Back to the first bundle for the tests after this one.
    client.create_user_defined_endpoint(BUNDLE)


def test_endpoint_properties_round_trip(client):
    """Every EndpointProperties field the SDK models (interpreter_reuse, openapi_hidden,
    redirection_strategy too) reads back as deployed."""
    props = dict(
        _props("hello"),
        openapi={"responses": {"200": {"description": "ok"}}},
        openapi_hidden=True,
        interpreter_reuse={"key": "hello"},
        redirection_strategy="to_primary",
    )
    bundle = {
        "metadata": {"endpoints": {"/hello": {"get": props}}},
        "modules": [{"name": "hello.js", "module": HELLO_JS}],
    }
    try:
        client.create_user_defined_endpoint(bundle)
        got = client.get_user_defined_endpoint()
        assert got["metadata"]["endpoints"]["/hello"]["get"] == props
    finally:
        client.create_user_defined_endpoint(BUNDLE)


@pytest.mark.parametrize("bundle, words", [
    ({"metadata": {"endpoints": {"/x": {"get": dict(_props("hello"), js_module="absent.js")}}},
      "modules": [{"name": "hello.js", "module": HELLO_JS}]}, "absent.js"),
    ({"metadata": {"endpoints": {"/x": {"fetch": _props("hello")}}},
      "modules": [{"name": "hello.js", "module": HELLO_JS}]}, "fetch"),
    ({"metadata": {"endpoints": {"no-slash": {"get": _props("hello")}}},
      "modules": [{"name": "hello.js", "module": HELLO_JS}]}, "no-slash"),
])
def test_bad_bundle_is_400(client, bundle, words):
    with pytest.raises(HttpResponseError) as bad:
        client.create_user_defined_endpoint(bundle)
    assert bad.value.status_code == 400
    assert bad.value.error.code == "InvalidInput"
    assert words in bad.value.error.message
    # The deployed bundle is untouched.
    assert "/hello" in client.get_user_defined_endpoint()["metadata"]["endpoints"]


RUNTIME_KEYS = {"max_heap_bytes", "max_stack_bytes", "max_execution_time_ms",
                "log_exception_details", "return_exception_details", "max_cached_interpreters"}


def test_runtime_options(client):
    before = client.get_runtime_options()
    assert isinstance(before, models.JsRuntimeOptions)
    assert set(before.keys()) == RUNTIME_KEYS
    try:
        patched = client.update_runtime_options(models.JsRuntimeOptions(
            max_heap_bytes=200 * 1024 * 1024, max_execution_time_ms=2000, return_exception_details=True))
        assert patched.max_heap_bytes == 200 * 1024 * 1024
        assert patched.max_execution_time_ms == 2000
        assert patched.return_exception_details is True
        # Untouched options keep their values.
        assert patched.max_stack_bytes == before.max_stack_bytes
        assert patched.max_cached_interpreters == before.max_cached_interpreters
        assert patched.log_exception_details == before.log_exception_details
        got = client.get_runtime_options()
        assert dict(got) == dict(patched)
        # A plain dict works the same.
        assert client.update_runtime_options({"max_stack_bytes": 2 * 1024 * 1024}).max_stack_bytes == 2 * 1024 * 1024
        # Out of range, and unknown options, are 400s.
        for bad in ({"max_heap_bytes": 1024}, {"max_stack_bytes": 1 << 40},
                    {"max_execution_time_ms": 0}, {"max_execution_time_ms": 600001},
                    {"no_such_option": 1}):
            with pytest.raises(HttpResponseError) as refused:
                client.update_runtime_options(bad)
            assert refused.value.status_code == 400, bad
        assert dict(client.get_runtime_options())["max_execution_time_ms"] == 2000
    finally:
        client.update_runtime_options(dict(before))
    assert dict(client.get_runtime_options()) == dict(before)


ADD_JS = """
export function main(a, b) {
  return String(Number(a) + Number(b));
}

export function pair(a, b) {
  return { a, b, count: 2 };
}

export function nothing() {}
"""


def test_function_lifecycle(client):
    fid = "add"
    created = client.create_user_defined_function(fid, {"code": ADD_JS})
    assert isinstance(created, models.UserDefinedFunction)
    assert created.id == fid and created.code == ADD_JS
    got = client.get_user_defined_function(fid)
    assert got.id == fid and got.code == ADD_JS
    listed = {f.id: f.code for f in client.list_user_defined_functions()}
    assert listed[fid] == ADD_JS
    # The SDK reads the write's transaction id from the x-ms-ccf-transaction-id header.
    headers = client.create_user_defined_function(
        fid, {"code": ADD_JS}, cls=lambda response, body, headers: headers)
    view, seqno = headers["x-ms-ccf-transaction-id"].split(".")
    assert int(view) >= 1 and int(seqno) >= 1

    # Replacing keeps the id (200 instead of 201: both are what the SDK accepts).
    replaced = client.create_user_defined_function(fid, models.UserDefinedFunction(
        code=ADD_JS + "\nexport function version() { return 2; }\n"))
    assert replaced.id == fid and replaced.code.endswith("return 2; }\n")
    assert client.get_user_defined_function(fid).code == replaced.code
    assert len([f for f in client.list_user_defined_functions() if f.id == fid]) == 1

    client.delete_user_defined_function(fid)
    with pytest.raises(ResourceNotFoundError) as gone:
        client.get_user_defined_function(fid)
    assert gone.value.status_code == 404
    assert gone.value.error.code == "UserDefinedFunctionNotFound"
    assert fid not in {f.id for f in client.list_user_defined_functions()}
    with pytest.raises(ResourceNotFoundError):
        client.delete_user_defined_function(fid)


def test_execute_with_arguments(client):
    client.create_user_defined_function("calc", {"code": ADD_JS})
    try:
        out = client.execute_user_defined_function(
            "calc", models.UserDefinedFunctionExecutionProperties(arguments=["2", "40"]))
        assert isinstance(out, models.UserDefinedFunctionExecutionResponse)
        assert out.status == models.UserDefinedFunctionExecutionStatus.SUCCEEDED
        assert out.result.return_value == "42"
        assert out.error is None
        # Another export, a non-string result (JSON-stringified), a plain dict body.
        out = client.execute_user_defined_function(
            "calc", {"arguments": ["x", "y"], "exportedFunctionName": "pair"})
        assert out.status == "Succeeded"
        assert out.result.return_value == '{"a":"x","b":"y","count":2}'
        out = client.execute_user_defined_function(
            "calc", models.UserDefinedFunctionExecutionProperties(exported_function_name="nothing"))
        assert out.status == "Succeeded" and out.result.return_value == ""
        # No body at all: main() with no arguments.
        out = client.execute_user_defined_function("calc")
        assert out.status == "Succeeded" and out.result.return_value == "NaN"
        # An export that does not exist fails the execution.
        out = client.execute_user_defined_function(
            "calc", models.UserDefinedFunctionExecutionProperties(exported_function_name="absent"))
        assert out.status == models.UserDefinedFunctionExecutionStatus.FAILED
        assert "absent" in out.error.message
        # Executing a function that does not exist.
        with pytest.raises(ResourceNotFoundError):
            client.execute_user_defined_function("no-such-function")
    finally:
        client.delete_user_defined_function("calc")


def test_execute_throwing_function_fails_with_the_message(client):
    client.create_user_defined_function("thrower", {"code": """
export function main(what) {
  ccf.kv["udf_thrown"].set(ccf.strToBuf("k"), ccf.strToBuf("should not stay"));
  throw new Error("refused: " + what);
}
export function check() {
  return ccf.kv["udf_thrown"].get(ccf.strToBuf("k")) === undefined ? "absent" : "present";
}
"""})
    try:
        out = client.execute_user_defined_function(
            "thrower", models.UserDefinedFunctionExecutionProperties(arguments=["badly"]))
        assert out.status == models.UserDefinedFunctionExecutionStatus.FAILED
        assert "refused: badly" in out.error.message
        assert out.result is None
        # The failed execution's write was not kept.
        out = client.execute_user_defined_function("thrower", {"exportedFunctionName": "check"})
        assert out.status == "Succeeded" and out.result.return_value == "absent"
    finally:
        client.delete_user_defined_function("thrower")


def test_endless_loop_hits_the_time_limit(client):
    client.create_user_defined_function("spin", {"code": "export function main() { for (;;) {} }"})
    try:
        started = time.time()
        out = client.execute_user_defined_function(
            "spin", models.UserDefinedFunctionExecutionProperties(
                runtime_options=models.JsRuntimeOptions(max_execution_time_ms=50)))
        assert time.time() - started < 20
        assert out.status == models.UserDefinedFunctionExecutionStatus.FAILED
        message = out.error.message.lower()
        assert "time" in message or "50" in message or "limit" in message, out.error.message
        # Out-of-range runtime options in an execution are refused.
        with pytest.raises(HttpResponseError) as bad:
            client.execute_user_defined_function(
                "spin", {"runtimeOptions": {"max_execution_time_ms": 0}})
        assert bad.value.status_code == 400
    finally:
        client.delete_user_defined_function("spin")


def test_kv_write_in_one_function_is_seen_by_another(client):
    client.create_user_defined_function("writer", {"code": """
export function main(key, value) {
  ccf.kv["udf_shared"].set(ccf.strToBuf(key), ccf.strToBuf(value));
  return "stored " + key;
}
"""})
    client.create_user_defined_function("reader-fn", {"code": """
export function main(key) {
  const v = ccf.kv["udf_shared"].get(ccf.strToBuf(key));
  return v === undefined ? "missing" : ccf.bufToStr(v);
}
"""})
    try:
        assert client.execute_user_defined_function(
            "reader-fn", {"arguments": ["colour"]}).result.return_value == "missing"
        out = client.execute_user_defined_function("writer", {"arguments": ["colour", "teal"]})
        assert out.status == "Succeeded" and out.result.return_value == "stored colour"
        out = client.execute_user_defined_function("reader-fn", {"arguments": ["colour"]})
        assert out.status == "Succeeded" and out.result.return_value == "teal"
    finally:
        client.delete_user_defined_function("writer")
        client.delete_user_defined_function("reader-fn")


def test_reader_may_read_but_not_change_or_execute(dev, client, reader):
    rc = reader["client"]
    client.create_user_defined_function("for-readers", {"code": "export function main() { return 'hi'; }"})
    try:
        # Reading is any role's.
        assert rc.get_user_defined_function("for-readers").code.startswith("export function main")
        assert "for-readers" in {f.id for f in rc.list_user_defined_functions()}
        assert "/hello" in rc.get_user_defined_endpoint()["metadata"]["endpoints"]
        assert set(dict(rc.get_runtime_options())) == RUNTIME_KEYS
        # Changing and executing are not.
        with pytest.raises(HttpResponseError) as refused:
            rc.create_user_defined_function("by-reader", {"code": "export function main() {}"})
        assert refused.value.status_code == 403
        with pytest.raises(HttpResponseError) as refused:
            rc.execute_user_defined_function("for-readers")
        assert refused.value.status_code == 403
        with pytest.raises(HttpResponseError) as refused:
            rc.delete_user_defined_function("for-readers")
        assert refused.value.status_code == 403
        with pytest.raises(HttpResponseError) as refused:
            rc.create_user_defined_endpoint(BUNDLE)
        assert refused.value.status_code == 403
        with pytest.raises(HttpResponseError) as refused:
            rc.update_runtime_options({"max_execution_time_ms": 100})
        assert refused.value.status_code == 403
        # The Reader may still call a deployed user_cert endpoint.
        r = _call(dev, "GET", "/app/hello", cert=reader["pem"])
        assert r.status_code == 200, r.text
        assert "by-reader" not in {f.id for f in client.list_user_defined_functions()}
    finally:
        client.delete_user_defined_function("for-readers")


def test_contributor_may_execute_but_not_create(dev, client):
    """A Contributor, added through the SDK's multi-role users API (ledgerUsers)."""
    binary = os.environ["COVENANT_BIN"]
    keys = os.path.join(dev["tmp"], "contributor-keys")
    subprocess.run([binary, "keygen", "--name", "contrib", "--dir", keys], check=True, capture_output=True)
    cert_path = os.path.join(keys, "contrib_cert.pem")
    fingerprint = _fingerprint(cert_path)
    added = client.create_or_update_ledger_user(
        fingerprint, models.LedgerUserMultipleRoles(assigned_roles=["Contributor"]))
    assert added.assigned_roles == ["Contributor"]
    combined = os.path.join(keys, "contrib.pem")
    with open(combined, "w") as f, open(cert_path) as c, open(os.path.join(keys, "contrib_privk.pem")) as k:
        f.write(c.read() + k.read())
    cc = _client(dev, combined)
    client.create_user_defined_function("for-contributors", {"code": "export function main(x) { return 'got ' + x; }"})
    try:
        out = cc.execute_user_defined_function("for-contributors", {"arguments": ["it"]})
        assert out.status == "Succeeded" and out.result.return_value == "got it"
        with pytest.raises(HttpResponseError) as refused:
            cc.create_user_defined_function("by-contributor", {"code": "export function main() {}"})
        assert refused.value.status_code == 403
    finally:
        client.delete_user_defined_function("for-contributors")


def test_list_users_and_custom_roles(dev, client, reader):
    """The preview SDK's list_users (GET /app/users, single-role shape) and its
    user-defined roles, assigned through ledgerUsers."""
    users = {u["userId"]: u["assignedRole"] for u in client.list_users()}
    assert users[_fingerprint(dev["user0"])] == "Administrator", users
    assert users[reader["fingerprint"]] == "Reader", users
    # The SDK's typed model sends camelCase; the service answers in snake_case.
    client.create_user_defined_role(
        models.Roles(roles=[models.Role(role_name="auditor", role_actions=["/audit/read"])]))
    roles = client.get_user_defined_role(role_name="auditor")
    assert roles["roles"] == [{"role_name": "auditor", "role_actions": ["/audit/read"]}], roles
    got = client.create_or_update_ledger_user(reader["fingerprint"], {"assignedRoles": ["auditor"]})
    # The reply repeats the roles sent; the user holds the union.
    assert got["assignedRoles"] == ["auditor"], got
    assert sorted(client.get_ledger_user(reader["fingerprint"])["assignedRoles"]) == ["Reader", "auditor"]
    client.update_user_defined_role({"roles": [{"role_name": "auditor", "role_actions": ["/audit/read", "/audit/list"]}]})
    assert set(client.get_user_defined_role(role_name="auditor")["roles"][0]["role_actions"]) == {"/audit/read", "/audit/list"}
    client.delete_user_defined_role(role_name="auditor")
    assert client.get_ledger_user(reader["fingerprint"])["assignedRoles"] == ["Reader"]
    with pytest.raises(HttpResponseError) as e:
        client.get_user_defined_role(role_name="auditor")
    assert e.value.status_code == 404


def test_readme_managing_users(dev, client, reader):
    """The 2.0.0b2 README's "Managing users" flow, as written: the single-role
    calls at the SDK's default api-version (2024-12-09-preview). ACL itself answers
    these with 301 since 2024-08-22-preview; covenant serves them."""
    for user_id, role in [("some AAD object id", "Contributor"), (_fingerprint(reader["pem"]), "Reader")]:
        client.create_or_update_user(user_id, {"assignedRole": role})
        user = client.get_user(user_id)
        assert user["userId"] == user_id and user["assignedRole"] == role, user
        if user_id != reader["fingerprint"]:
            client.delete_user(user_id)
            with pytest.raises(ResourceNotFoundError):
                client.get_user(user_id)


def test_builtin_role_names_ignore_case(client):
    """ACL matches built-in role names without regard to case and shows them capitalized."""
    uid = "11111111-2222-3333-4444-555555555555"
    got = client.create_or_update_ledger_user(uid, {"assignedRoles": ["administrator"]})
    assert got["assignedRoles"] == ["Administrator"], got
    assert client.get_ledger_user(uid)["assignedRoles"] == ["Administrator"]
    client.delete_ledger_user(uid)
    # A certificate's digest in CCF's spelling is not an ACL user id.
    with pytest.raises(HttpResponseError) as e:
        client.create_or_update_ledger_user("ab" * 32, {"assignedRoles": ["Reader"]})
    assert e.value.status_code == 400 and "AB:AB" in str(e.value), e.value


HOOKS_JS = """
export function stamp(tag) {
  ccf.kv["hooks.seen"].set(ccf.strToBuf(tag), ccf.strToBuf(context.collectionId + ":" + context.contents));
}
export function seen(tag) {
  const v = ccf.kv["hooks.seen"].get(ccf.strToBuf(tag));
  return v === undefined ? "" : ccf.bufToStr(v);
}
export function refuse() { throw new Error("not this one"); }
"""


def test_append_with_pre_and_post_hooks(dev, client):
    """LedgerEntry.preHooks / postHooks: user-defined functions run in the append's
    transaction, in order, with ACL's `context`; a failing hook aborts the append."""
    client.create_user_defined_function("hooks", {"code": HOOKS_JS})
    try:
        entry = {
            "contents": "with hooks",
            "preHooks": [{"functionId": "hooks", "properties": {"exportedFunctionName": "stamp", "arguments": ["pre"]}}],
            "postHooks": [{"functionId": "hooks", "properties": {"exportedFunctionName": "stamp", "arguments": ["post"]}}],
        }
        r = client.begin_create_ledger_entry(entry, collection_id="hooked").result()
        assert r["collectionId"] == "hooked" and r["transactionId"], r
        for tag in ("pre", "post"):
            out = client.execute_user_defined_function(
                "hooks", {"exportedFunctionName": "seen", "arguments": [tag]})
            assert out["result"]["returnValue"] == "hooked:with hooks", out
        before = client.get_current_ledger_entry(collection_id="hooked")["transactionId"]
        failing = {"contents": "never written",
                   "postHooks": [{"functionId": "hooks", "properties": {"exportedFunctionName": "refuse"}}]}
        with pytest.raises(HttpResponseError) as e:
            client.create_ledger_entry(failing, collection_id="hooked")
        assert e.value.status_code == 500 and "not this one" in str(e.value), e.value
        assert client.get_current_ledger_entry(collection_id="hooked")["transactionId"] == before
        too_many = {"contents": "x", "preHooks": [{"functionId": "hooks"}] * 6}
        with pytest.raises(HttpResponseError) as e:
            client.create_ledger_entry(too_many)
        assert e.value.status_code == 400, e.value
        with pytest.raises(HttpResponseError) as e:
            client.create_ledger_entry({"contents": "x", "preHooks": [{"functionId": "absent"}]})
        assert e.value.status_code == 400 and "absent" in str(e.value), e.value
    finally:
        client.delete_user_defined_function("hooks")
