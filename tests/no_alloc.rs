//! `decide` must not touch the heap when no policy variable is involved:
//! a counting global allocator checks it on the example store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A global allocator is unsafe by definition; it only counts and forwards.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use iamd::engine::{self, ContextEntry, DecisionKind, Request, Snapshot};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decide_does_not_allocate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store");
    let snap = Snapshot::compile(&iamd::store::load(&dir).unwrap().store).unwrap();
    let now = jiff::Timestamp::from_second(1_780_000_000).unwrap();
    let f = "arn:aws:lambda:us-east-1:111122223333:function";
    let hello = format!("{f}:HelloWorld");
    let prod = format!("{f}:HelloWorld:prod");
    let bob = format!("{f}:bob-fn");
    let ctx = [
        ContextEntry::new("aws:SourceAccount", ["111122223333"]),
        ContextEntry::new("aws:SourceArn", ["arn:aws:s3:::ExampleBucket"]),
        ContextEntry::new("aws:SourceIp", ["198.51.100.7"]),
        ContextEntry::new("aws:ViaAWSService", ["false"]),
    ];
    let cases = [
        (
            "arn:aws:iam::111122223333:user/alice",
            "lambda:InvokeFunction",
            hello.as_str(),
            &ctx[2..2],
            DecisionKind::Allow,
        ),
        (
            "arn:aws:iam::111122223333:user/alice",
            "lambda:DeleteFunction",
            prod.as_str(),
            &ctx[2..2],
            DecisionKind::ExplicitDeny,
        ),
        (
            "arn:aws:iam::111122223333:user/alice",
            "lambda:InvokeFunction",
            hello.as_str(),
            &ctx[2..4],
            DecisionKind::ExplicitDeny,
        ),
        (
            "s3.amazonaws.com",
            "lambda:InvokeFunction",
            hello.as_str(),
            &ctx[0..2],
            DecisionKind::Allow,
        ),
        (
            "arn:aws:iam::444455556666:user/erin",
            "lambda:GetFunction",
            hello.as_str(),
            &ctx[2..2],
            DecisionKind::ImplicitDeny,
        ),
        (
            "arn:aws:sts::111122223333:assumed-role/lambda-cross-account/dave",
            "lambda:InvokeFunction",
            hello.as_str(),
            &ctx[2..2],
            DecisionKind::Allow,
        ),
        (
            "111122223333",
            "lambda:DeleteFunction",
            hello.as_str(),
            &ctx[2..2],
            DecisionKind::Allow,
        ),
        // ${aws:username} resolves without allocating too.
        (
            "arn:aws:iam::111122223333:user/contractors/bob",
            "lambda:GetFunction",
            bob.as_str(),
            &ctx[2..2],
            DecisionKind::Allow,
        ),
    ];
    // The counter sees allocations at all.
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let probe = std::hint::black_box(vec![0u8; 16]);
    assert!(ALLOCATIONS.load(Ordering::SeqCst) > before);
    drop(probe);
    for (p, a, r, c, want) in cases {
        let req = Request::new(p, a, r, c, now).unwrap();
        // Warm any lazily initialised statics before counting.
        assert_eq!(engine::decide(&snap, &req).kind(), want, "{p} {a} {r}");
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let d = engine::decide(&snap, &req);
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        assert_eq!(d.kind(), want);
        assert_eq!(
            after - before,
            0,
            "decide allocated {} time(s) for {p} {a} {r}",
            after - before
        );
    }
}
