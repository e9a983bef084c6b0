-- wrk script: POST /hello with a small JSON order (about 150 bytes), for request_validation
-- (bench/conf/torii-validation.yaml.tmpl) against the plain route.
wrk.method = "POST"
wrk.path = "/hello"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"customer":"ada@example.com","items":[{"sku":"ABC-1234","qty":2},{"sku":"XYZ-0001","qty":1}],"note":"leave at the door"}'
