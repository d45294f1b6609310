"""Signs and checks webhook deliveries with the providers' own libraries.

Used only by ingest's tests (services/ingest/tests/it/senders.rs), run with
the Python of RAVE's tool venv (scripts/install puts stripe and slack_sdk
there). Reads one JSON request on stdin, writes one JSON answer on stdout:

  {"op": "sign", "provider": "stripe"|"slack", "secret": S, "body": B, "timestamp": T}
      -> {"headers": {name: value, ...}}
  {"op": "verify", "provider": ..., "secret": S, "body": B, "headers": {...}, "now": T}
      -> {"valid": true|false, "error": "..."}
"""

import json
import sys
import time
from typing import Any, Dict

import slack_sdk.signature
import stripe


def sign(provider: str, secret: str, body: str, timestamp: int) -> Dict[str, str]:
    if provider == "stripe":
        header = stripe.WebhookSignature.generate_signature_header(
            body, secret, timestamp=timestamp
        )
        return {"stripe-signature": header}
    if provider == "slack":
        verifier = slack_sdk.signature.SignatureVerifier(signing_secret=secret)
        signature = verifier.generate_signature(timestamp=str(timestamp), body=body)
        return {
            "x-slack-request-timestamp": str(timestamp),
            "x-slack-signature": signature,
        }
    raise ValueError(f"no library for {provider}")


def verify(provider: str, secret: str, body: str, headers: Dict[str, str], now: int) -> Dict[str, Any]:
    try:
        if provider == "stripe":
            # construct_event checks the signature and the 300 s tolerance
            # against the real clock, as a Stripe integration would.
            stripe.Webhook.construct_event(body, headers["stripe-signature"], secret)
            return {"valid": True}
        if provider == "slack":
            verifier = slack_sdk.signature.SignatureVerifier(
                signing_secret=secret, clock=FixedClock(now)
            )
            valid = verifier.is_valid(
                body=body,
                timestamp=headers["x-slack-request-timestamp"],
                signature=headers["x-slack-signature"],
            )
            return {"valid": bool(valid)}
    except Exception as e:  # the library's own refusal, reported
        return {"valid": False, "error": f"{type(e).__name__}: {e}"}
    raise ValueError(f"no library for {provider}")


class FixedClock(slack_sdk.signature.Clock):
    def __init__(self, now: int) -> None:
        self.at = now

    def now(self) -> float:
        return float(self.at)


def main() -> None:
    request = json.load(sys.stdin)
    if request["op"] == "sign":
        answer: Dict[str, Any] = {
            "headers": sign(
                request["provider"],
                request["secret"],
                request["body"],
                int(request.get("timestamp") or time.time()),
            )
        }
    else:
        answer = verify(
            request["provider"],
            request["secret"],
            request["body"],
            request["headers"],
            int(request.get("now") or time.time()),
        )
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
