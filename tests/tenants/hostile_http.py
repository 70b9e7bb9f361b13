"""Tenants that answer with headers HTTP cannot carry: each request path tries one way in."""

BAD_HEADERS = """
from workers import Response

def fetch(request, env, ctx):
    if request.url.endswith("/crlf"):
        return Response("x", headers={"x-note": "a\\r\\nset-cookie: stolen=1"})
    if request.url.endswith("/nul"):
        return Response("x", headers={"x-note": "a\\x00b"})
    if request.url.endswith("/name"):
        return Response("x", headers={"content-length: 0, x": "1"})
    if request.url.endswith("/later"):
        response = Response("x")
        response.headers["x-later"] = "a\\nb"
        return response
    return Response("fine", headers={"x-fine": "yes"})
"""
