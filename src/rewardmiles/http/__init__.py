"""HTTP: what every router shares, the direct lane of the partner calls, and the connection layer.

Routes stay thin: they `authorize` (`access`), read the body with `read_validated_body`
(`bodies`: limits, strict JSON from `partner_json`, the route's model), hand the result to one
service function (run with `run_sync`, `threads`, since storage is synchronous) and answer with
`json_response` (`responses`); errors become problem+json in the exception handlers
(`handlers`, `validation`). Every request runs inside `middleware.RequestContextMiddleware`.

- `application`: `IssuanceApp`, FastAPI with the direct lane in front of its middleware stack;
- `direct`: the direct lane, the partner calls registered one by one (`DirectRoute`);
- `openapi`: the OpenAPI document, every error a problem;
- `connections`: the HTTP/1.1 connection layer `rewardmiles serve` runs.
"""
