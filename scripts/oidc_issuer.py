#!/usr/bin/env python3
"""A small OIDC issuer standing in for Cognito in the console's sign-in test
(issue 21, decision 0089): discovery, authorize (authorization code with
PKCE S256 only; it signs in one fixed user without asking), token (checks the
code verifier, the redirect URI and the client, once per code) and JWKS. Its
access tokens are RS256 JWTs shaped like Cognito's: `iss`, `sub`,
`client_id`, `scope`, `token_use: access`, `iat`, `exp`.

    issuer = Issuer(client_id="console-test", scope="crm/read crm/admin").start()
    issuer.url                      # http://127.0.0.1:<port>
    issuer.token(sub="x", ...)      # a token signed with its key, for negative tests
    issuer.stop()
"""

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n):
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Issuer:
    def __init__(self, client_id, scope, sub="marketer-1"):
        self.client_id = client_id
        self.scope = scope
        self.sub = sub
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self.codes = {}  # code -> {challenge, redirect_uri, client_id}
        self.exchanged = 0  # tokens issued for a verified code
        self.refused = []  # why token requests were refused
        self.server = None
        self.url = None

    # -- tokens ---------------------------------------------------------
    def token(self, key=None, kid=None, **claims):
        """An RS256 JWT with the issuer's claims, overridden by `claims`."""
        now = int(time.time())
        body = {
            "iss": self.url,
            "sub": self.sub,
            "client_id": self.client_id,
            "scope": self.scope,
            "token_use": "access",
            "iat": now,
            "exp": now + 3600,
        }
        body.update(claims)
        header = {"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}"
        signature = (key or self.key).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    def jwks(self):
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": _int_b64(numbers.n), "e": _int_b64(numbers.e)}
            ]
        }

    # -- server ---------------------------------------------------------
    def start(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, status, body, content_type="application/json", headers=()):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                # The console fetches discovery and the token endpoint from its own origin.
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Cache-Control", "no-store")
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_OPTIONS(self):
                self.send(204, b"", headers=[("Access-Control-Allow-Methods", "GET, POST"), ("Access-Control-Allow-Headers", "content-type")])

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                if url.path == "/.well-known/openid-configuration":
                    return self.send(200, {
                        "issuer": issuer.url,
                        "authorization_endpoint": f"{issuer.url}/authorize",
                        "token_endpoint": f"{issuer.url}/token",
                        "jwks_uri": f"{issuer.url}/jwks",
                        "response_types_supported": ["code"],
                        "grant_types_supported": ["authorization_code"],
                        "code_challenge_methods_supported": ["S256"],
                        "token_endpoint_auth_methods_supported": ["none"],
                    })
                if url.path == "/jwks":
                    return self.send(200, issuer.jwks())
                if url.path == "/authorize":
                    q = dict(urllib.parse.parse_qsl(url.query))
                    ok = (
                        q.get("response_type") == "code"
                        and q.get("client_id") == issuer.client_id
                        and q.get("code_challenge_method") == "S256"
                        and q.get("code_challenge")
                        and q.get("redirect_uri")
                        and q.get("state")
                    )
                    if not ok:
                        return self.send(400, {"error": "invalid_request", "got": q})
                    code = secrets.token_urlsafe(24)
                    issuer.codes[code] = {
                        "challenge": q["code_challenge"],
                        "redirect_uri": q["redirect_uri"],
                        "client_id": q["client_id"],
                    }
                    back = q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q["state"]})
                    return self.send(302, b"", "text/plain", headers=[("Location", back)])
                return self.send(404, {"error": "not_found"})

            def do_POST(self):
                if urllib.parse.urlparse(self.path).path != "/token":
                    return self.send(404, {"error": "not_found"})
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                pending = issuer.codes.pop(form.get("code", ""), None)
                why = None
                if form.get("grant_type") != "authorization_code":
                    why = "grant_type"
                elif pending is None:
                    why = "unknown or used code"
                elif form.get("client_id") != pending["client_id"]:
                    why = "client_id"
                elif form.get("redirect_uri") != pending["redirect_uri"]:
                    why = "redirect_uri"
                elif b64url(hashlib.sha256(form.get("code_verifier", "").encode()).digest()) != pending["challenge"]:
                    why = "code_verifier does not match the challenge"
                if why:
                    issuer.refused.append(why)
                    return self.send(400, {"error": "invalid_grant", "error_description": why})
                issuer.exchanged += 1
                return self.send(200, {"access_token": issuer.token(), "token_type": "Bearer", "expires_in": 3600})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
