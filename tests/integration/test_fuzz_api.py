"""Every operation of every service's OpenAPI fuzzed with schemathesis against the real processes.

One stack (all five services, this test's own key prefix) is started once; each operation is a subtest that
sends a bounded, derandomized set of valid and invalid requests (schemathesis' positive and negative modes)
with the tokens that get writes past the guard, and a CDP JWT on the simulator's Coinbase paths. Every answer
must be below 500, and every 4xx must be JSON in the shape its path promises: the stack's
`{"error", "message", "details"}`, or on the simulator's Coinbase paths Coinbase's own shapes.

Schemathesis sends standard JSON only; two kinds of body a client can still send are added by hand: JSON
bodies with one value swapped for a non-standard number (NaN, Infinity, 1e400: Python's json reads them) or
a lone surrogate escape ("\\ud800": valid JSON syntax, not valid Unicode), and create-order bodies for the
simulator, whose OpenAPI declares no body for that path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import hypothesis
import orjson
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from shared import settings as shared_settings
from shared.exchange.auth import JwtSigner
from shared.exchange.factory import throwaway_key
from tests.conftest import StackFactory, bounded_examples

pytestmark = pytest.mark.integration

# The ratelimit service last: its penalties and runtime limits close pools the other services draw on.
SERVICES = ("universe", "strategy", "executor", "exchange_sim", "ratelimit")
# Examples per operation and kind; derandomized, so every run sends the same requests.
MAX_EXAMPLES = 8
REQUEST_TIMEOUT_S = 15.0
# The services' token; where a write is the operator's, the operator's token (tried when the first gets 403).
TOKENS = tuple(
    token
    for token in (shared_settings.DEV_API_TOKEN, getattr(shared_settings, "DEV_OPERATOR_TOKEN", None))
    if token is not None
)
# The simulator counts Coinbase's limits per IP and per key: every process here shares 127.0.0.1, so the fuzzing
# would starve the universe's and strategy's own calls. The limits themselves are tested in test_exchange_sim.
STACK_ENV = {
    "EXCHANGE_SIM__RATE_LIMITS__PUBLIC_PER_S": "100000",
    "EXCHANGE_SIM__RATE_LIMITS__PRIVATE_PER_S": "100000",
}

# (service, METHOD, path) left out, and why.
EXCLUDED: dict[tuple[str, str, str], str] = {
    ("exchange_sim", "POST", "/sim/faults"): (
        "turns injected faults on for the whole simulator: 503s, 30 s timeouts, HTML 429s and truncated JSON for "
        "every later operation and for this stack's universe, strategy and executor (test_fuzz_exchange drives it)"
    ),
}

COINBASE_PREFIX = "/api/v3/"
V2_PREFIX = "/v2/"
STACK_ERROR_KEYS = {"error", "message", "details"}
# What replaces one value of a valid JSON body: numbers Python's json reads but JSON has not, and strings with a
# lone surrogate (valid JSON syntax; no UTF-8 encodes them).
NON_STANDARD_JSON = {
    "non-finite numbers": ("NaN", "Infinity", "-Infinity", "1e400"),
    "lone surrogates": ('"\\ud800"', '"a\\udfffb"'),
}
MARKER = "\x00fuzz-marker\x00"


class CoinbaseJwt(requests.auth.AuthBase):
    """A fresh CDP JWT on every call to the simulator's Coinbase paths, for the path the server will see."""

    def __init__(self) -> None:
        self.signer = JwtSigner(throwaway_key())

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(str(request.url))
        path = unquote(url.path)
        if path.startswith((COINBASE_PREFIX, V2_PREFIX)):
            token = self.signer.token(str(request.method), url.netloc, path)
            request.headers["Authorization"] = f"Bearer {token}"
        return request


def problems_with_error(service: str, method: str, path: str, status: int, headers: Any, body: bytes) -> list[str]:
    """What is wrong with a 4xx answer's body for this path, [] when it has the promised shape."""
    content_type = ",".join(headers.get("content-type", []))
    coinbase = service == "exchange_sim" and path.startswith(COINBASE_PREFIX)
    # Advanced Trade answers a refused JWT with a bare text 401, as the real exchange does.
    if coinbase and status == 401 and body.startswith(b"Unauthorized") and content_type.startswith("text/plain"):
        return []
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [f"body is not JSON ({content_type}): {body[:200]!r}"]
    if not content_type.startswith("application/json"):
        return [f"JSON body served as {content_type!r}"]
    if not isinstance(data, dict):
        return [f"body is {type(data).__name__}, not an object: {data!r:.200}"]
    if service == "exchange_sim" and path.startswith(V2_PREFIX):
        errors = data.get("errors")
        ok = set(data) == {"errors"} and isinstance(errors, list) and bool(errors)
        ok = ok and all(isinstance(e, dict) and {"id", "message"} <= set(e) for e in errors)
        return [] if ok else [f"not the v2 {{errors: [{{id, message}}]}} shape: {data!r:.300}"]
    if coinbase:
        ok = set(data) == {"error", "message", "error_details"} and all(isinstance(v, str) for v in data.values())
        return [] if ok else [f"not Coinbase's {{error, message, error_details}} shape: {data!r:.300}"]
    if service == "ratelimit" and (method, path, status) == ("POST", "/v1/acquire", 429):
        # documented: a refusal is {granted: false, retry_after_ms, reason, pool}, with Retry-After
        ok = data.get("granted") is False and isinstance(data.get("retry_after_ms"), int | float)
        return [] if ok and "retry-after" in headers else [f"not the documented acquire refusal: {data!r:.300}"]
    if set(data) != STACK_ERROR_KEYS:
        return [f"keys {sorted(data)} are not the stack's {sorted(STACK_ERROR_KEYS)}: {data!r:.300}"]
    wrong = [
        key
        for key, kind in (("error", str), ("message", str), ("details", dict))
        if not isinstance(data[key], kind) or (kind is str and not data[key])
    ]
    return [f"{', '.join(wrong)} of the wrong type or empty: {data!r:.300}"] if wrong else []


def bounded(max_examples: int = MAX_EXAMPLES) -> hypothesis.settings:
    return bounded_examples(max_examples)


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a scalar (or an empty container) sits."""
    if isinstance(value, dict) and value:
        return [p for key, item in value.items() for p in leaf_paths(item, (*path, key))]
    if isinstance(value, list) and value:
        return [p for index, item in enumerate(value) for p in leaf_paths(item, (*path, index))]
    return [path]


def with_literal(document: Any, path: tuple[Any, ...], literal: str) -> str:
    """The document as JSON text with the value at `path` replaced by a raw JSON literal."""
    if not path:
        return literal
    copy = json.loads(json.dumps(document))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = MARKER
    return json.dumps(copy).replace(json.dumps(MARKER), literal)


class Fuzzer:
    """Sends cases to one service and checks each answer."""

    def __init__(self, http: requests.Session, service: str, base_url: str):
        self.http = http
        self.service = service
        self.base_url = base_url

    def check(self, method: str, template: str, shown: str, response: Any, headers: Any, content: bytes) -> None:
        status = response.status_code
        where = f"{self.service}: {method} {shown} -> {status}"
        assert status < 500, f"{where}\n{content[:600]!r}"
        if 400 <= status < 500:
            problems = problems_with_error(self.service, method, template, status, headers, content)
            assert not problems, f"{where}\n{'; '.join(problems)}"

    def send_case(self, case: Any) -> None:
        for token in TOKENS:
            response = case.call(
                base_url=self.base_url,
                session=self.http,
                headers={"Authorization": f"Bearer {token}"},
                timeout=REQUEST_TIMEOUT_S,
            )
            if response.status_code != 403 or b'"forbidden"' not in response.content:
                break
        shown = case.as_curl_command(base_url=self.base_url)
        self.check(case.method, case.operation.path, shown, response, response.headers, response.content)

    def send_raw(self, method: str, template: str, path: str, query: Any, body: str | bytes) -> None:
        for token in TOKENS:
            response = self.http.request(
                method,
                f"{self.base_url}{path}",
                params=query,
                data=body.encode() if isinstance(body, str) else body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=REQUEST_TIMEOUT_S,
            )
            if response.status_code != 403 or b'"forbidden"' not in response.content:
                break
        headers = {name.lower(): [value] for name, value in response.headers.items()}
        shown = f"{path} with body {body[:300]!r}"
        self.check(method, template, shown, response, headers, response.content)

    def schemathesis_cases(self, operation: Any, mode: GenerationMode) -> None:
        @bounded()
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            self.send_case(case)

        run()

    def non_standard_json(self, operation: Any, literals: tuple[str, ...]) -> None:
        """A valid body with one value (anywhere in it) swapped for one of these raw JSON literals."""

        @bounded()
        @hypothesis.given(
            case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            data=st.data(),
            literal=st.sampled_from(literals),
        )
        def run(case: Any, data: st.DataObject, literal: str) -> None:
            where = data.draw(st.sampled_from(leaf_paths(case.body)), label="replaced")
            body = with_literal(case.body, where, literal)
            self.send_raw(case.method, operation.path, case.formatted_path, case.query, body)

        run()


# The simulator's create-order body, which its OpenAPI leaves undeclared: sizes and prices as Coinbase sends them
# (decimal strings), and as a careless client might (numbers, exponents, NaN, huge or tiny, empty).
DECIMAL_TEXT = st.one_of(
    st.sampled_from(["10", "0.001", "1", "0", "-1", "", " 1", "NaN", "sNaN", "Infinity", "1e30", "1e-30"]),
    st.from_regex(r"\A-?[0-9]{1,4}(\.[0-9]{1,8})?([eE][+-]?[0-9]{1,7})?\Z"),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)
# mostly decimal strings, so most bodies get past the shape checks to the exchange's own rules
SIZE = st.one_of(DECIMAL_TEXT, DECIMAL_TEXT, DECIMAL_TEXT, st.integers(), st.floats(allow_nan=False), st.none())
ORDER_CONFIGURATION = st.one_of(
    st.fixed_dictionaries({"market_market_ioc": st.fixed_dictionaries({}, optional={"quote_size": SIZE})}),
    st.fixed_dictionaries({"market_market_ioc": st.fixed_dictionaries({}, optional={"base_size": SIZE})}),
    st.fixed_dictionaries(
        {
            "limit_limit_gtc": st.fixed_dictionaries(
                {"base_size": SIZE, "limit_price": SIZE}, optional={"post_only": SIZE}
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "limit_limit_gtd": st.fixed_dictionaries(
                {"base_size": SIZE, "limit_price": SIZE, "end_time": st.one_of(st.text(max_size=30), st.integers())}
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "stop_limit_stop_limit_gtc": st.fixed_dictionaries(
                {
                    "base_size": SIZE,
                    "limit_price": SIZE,
                    "stop_price": SIZE,
                    "stop_direction": st.sampled_from(["STOP_DIRECTION_STOP_UP", "STOP_DIRECTION_STOP_DOWN", "UP", 1]),
                }
            )
        }
    ),
    st.dictionaries(st.text(max_size=10), st.integers(), max_size=2),
)
ORDER_BODY = st.fixed_dictionaries(
    {
        "client_order_id": st.uuids().map(str),
        "product_id": st.sampled_from(["BTC-USD", "ETH-USD", "BTC-USD", "ETH-USD", "NOPE-USD", ""]),
        "side": st.sampled_from(["BUY", "SELL", "BUY", "SELL", "HOLD"]),
        "order_configuration": ORDER_CONFIGURATION,
    }
)


def order(side: str, configuration: dict[str, Any]) -> dict[str, Any]:
    return {"client_order_id": f"fuzz-{side}-{configuration}", "product_id": "BTC-USD", "side": side} | {
        "order_configuration": configuration
    }


def crafted_orders(fuzzer: Fuzzer) -> None:
    path = "/api/v3/brokerage/orders"

    @bounded(MAX_EXAMPLES * 8)
    @hypothesis.given(body=ORDER_BODY)
    # sizes a real order could carry: far above any balance, far below any increment
    @hypothesis.example(body=order("BUY", {"market_market_ioc": {"quote_size": "1e30"}}))
    @hypothesis.example(body=order("SELL", {"market_market_ioc": {"base_size": "1e30"}}))
    @hypothesis.example(body=order("BUY", {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "1e30"}}))
    @hypothesis.example(body=order("BUY", {"market_market_ioc": {"quote_size": "1e-30"}}))
    def run(body: dict[str, Any]) -> None:
        fuzzer.send_raw("POST", path, path, None, json.dumps(body))

    run()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.auth = CoinbaseJwt()
    yield session
    session.close()


def test_every_operation_of_every_service(
    redis_url: str, start_stack: StackFactory, http: requests.Session, subtests: pytest.Subtests
) -> None:
    stack = start_stack(redis_url, extra_env=STACK_ENV)
    tested: list[str] = []
    for service in SERVICES:
        fuzzer = Fuzzer(http, service, stack.url(service))
        schema = schemathesis.openapi.from_url(f"{stack.url(service)}/openapi.json", timeout=REQUEST_TIMEOUT_S)
        for result in schema.get_all_operations():
            operation = result.ok()
            if (service, operation.method.upper(), operation.path) in EXCLUDED:
                continue
            label = f"{service} {operation.label}"
            tested.append(label)
            with subtests.test(msg=label):
                fuzzer.schemathesis_cases(operation, GenerationMode.POSITIVE)
                fuzzer.schemathesis_cases(operation, GenerationMode.NEGATIVE)
            if any(body.media_type == "application/json" for body in operation.body):
                for kind, literals in NON_STANDARD_JSON.items():
                    with subtests.test(msg=f"{label} [{kind}]"):
                        fuzzer.non_standard_json(operation, literals)
        if service == "exchange_sim":
            with subtests.test(msg="exchange_sim POST /api/v3/brokerage/orders [crafted order bodies]"):
                crafted_orders(fuzzer)
    assert len(tested) > 60, tested
    assert all(re.fullmatch(r"\w+ [A-Z]+ /\S*", label) for label in tested)
