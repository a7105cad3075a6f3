//! The `ops` target with a spill storage that fails writes (the Nth, or after N KiB, transient
//! or persistent) and reads on command. No panic, no wrong byte, no hang.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sparsebuf_fuzz::{allow_scripted_panics, build, run, Faulty, FuzzFault, Op, Setup};

fuzz_target!(|input: (FuzzFault, Setup, Vec<Op>)| {
    allow_scripted_panics();
    let (fault, setup, ops) = input;
    let storage = Arc::new(Faulty::new(fault.into()));
    let (buf, model, segment) = build(&setup, Some(storage.clone()));
    run(&buf, &model, segment, &ops, Some(&storage));
    // `stats` first: it waits for the spiller's writes in flight, which may fail meanwhile
    // (reading the storage's count before it once missed such a failure).
    let errors = buf.stats().spill_errors;
    let failed = storage
        .failed_writes
        .load(std::sync::atomic::Ordering::SeqCst) as u64;
    assert_eq!(errors, failed);
});
