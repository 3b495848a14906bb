//! Cost of one governance-sized call in a fresh runtime (every call gets one).

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

fn fresh_call(c: &mut Criterion) {
    let limits = covenant_js::Limits::default();
    let src = "export function resolve(proposal, proposerId, votes) {\n\
               const yes = votes.filter(v => v.vote).length;\n\
               return yes * 2 > 3 ? 'Accepted' : 'Open'; }";
    let args = [
        json!({"actions": [{"name": "set_user", "args": {"cert": "..."}}]}),
        json!("member0"),
        json!([{"member_id": "a", "vote": true}, {"member_id": "b", "vote": true}]),
    ];
    c.bench_function("js/fresh_runtime_call_resolve", |b| {
        b.iter(|| covenant_js::call(&limits, "constitution", src, "resolve", &args).unwrap())
    });
}

criterion_group!(benches, fresh_call);
criterion_main!(benches);
