//! Lookup latency for routers of 10 and 10,000 routes with the same request
//! shapes: a static hit, a parameter hit, a host-specific hit and a miss.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use torii_router::{Lookup, PathKind, PathPattern, RequestView, RouteSpec, Router};

/// Route `i`: 60% static `/svc{i}/items`, 30% `/svc{i}/items/{id}`, 10%
/// host-specific `/svc{i}/items` on `svc{i}.example.com`.
fn routes(n: usize) -> Router<usize> {
    let specs = (0..n)
        .map(|i| {
            let (hosts, path) = match i % 10 {
                0..=5 => (vec![], format!("/svc{i}/items")),
                6..=8 => (vec![], format!("/svc{i}/items/{{id}}")),
                _ => (
                    vec![format!("svc{i}.example.com")],
                    format!("/svc{i}/items"),
                ),
            };
            RouteSpec {
                value: i,
                hosts,
                path: PathPattern::parse(PathKind::Exact, &path).unwrap(),
                methods: vec![Method::GET],
                headers: vec![],
                query: vec![],
                version: None,
            }
        })
        .collect();
    Router::build(specs).unwrap()
}

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("lookup");
    for n in [10usize, 10_000] {
        let router = routes(n);
        // The same shapes for both sizes, taken from the last block of ten.
        let base = n - 10;
        let shapes = [
            (
                "static",
                "www.example.com".to_string(),
                format!("/svc{base}/items"),
            ),
            (
                "param",
                "www.example.com".to_string(),
                format!("/svc{}/items/42", base + 6),
            ),
            (
                "host",
                format!("svc{}.example.com", base + 9),
                format!("/svc{}/items", base + 9),
            ),
            (
                "miss",
                "www.example.com".to_string(),
                "/nope/items".to_string(),
            ),
        ];
        for (name, host, path) in &shapes {
            let req = RequestView {
                host,
                path,
                method: &Method::GET,
                headers: &headers,
                query: None,
                version: None,
            };
            let expect_found = *name != "miss";
            assert_eq!(
                matches!(router.lookup(&req), Lookup::Found(_)),
                expect_found
            );
            group.bench_with_input(BenchmarkId::new(*name, n), &req, |b, req| {
                b.iter(|| match router.lookup(black_box(req)) {
                    Lookup::Found(m) => *m.value,
                    _ => usize::MAX,
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
