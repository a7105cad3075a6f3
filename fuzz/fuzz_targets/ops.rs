//! Random configurations, sources (chunking, a failure, an `Interrupted` or a panic at a
//! position, a declared length that may be wrong) and operation sequences, against the model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparsebuf_fuzz::{allow_scripted_panics, build, run, Op, Setup};

fuzz_target!(|input: (Setup, Vec<Op>)| {
    allow_scripted_panics();
    let (setup, ops) = input;
    let (buf, model, segment) = build(&setup, None);
    run(&buf, &model, segment, &ops, None);
});
