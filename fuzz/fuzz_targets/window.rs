//! A live stream with a window that its budgets may not hold, pulled or pushed, driven by random
//! operations from one thread, with fan-out consumers starting and stopping: the model in
//! `tests/common/window_model.rs` (shared with `tests/window.rs`) checks every byte, the budgets
//! after each step, the errors allowed, that a cursor reading on never loses its bytes, and
//! what every consumer got.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sparsebuf_fuzz::window_model::{run_window_model, WindowOp, WindowSetup};

#[derive(Arbitrary, Debug)]
enum Op {
    ReadAt {
        offset: u32,
        len: u16,
    },
    WaitFor {
        offset: u32,
        len: u16,
    },
    CursorRead {
        cursor: u8,
        len: u16,
    },
    Seek {
        cursor: u8,
        to: u32,
    },
    NewCursor,
    DropCursor {
        cursor: u8,
    },
    Push {
        len: u16,
    },
    StartConsumer {
        chunk: u16,
        clip: bool,
        inline: bool,
        lagging: bool,
    },
    StopConsumer {
        consumer: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    len: u32,
    seed: u64,
    segment_shift: u8,
    ram_segments: u8,
    disk_segments: u8,
    window_segments: Option<u8>,
    max_read: u16,
    push: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let len = u64::from(input.len % 300_000);
    let setup = WindowSetup {
        len,
        seed: input.seed,
        segment_shift: 8 + u32::from(input.segment_shift % 5),
        ram: usize::from(input.ram_segments % 5),
        disk: u64::from(input.disk_segments % 5),
        window: input.window_segments.map(|w| u64::from(w % 16)),
        max_read: usize::from(input.max_read),
        push: input.push,
    };
    // Offsets within the stream and a little past its end.
    let at = |offset: u32| u64::from(offset) % (len + 5000);
    let ops: Vec<WindowOp> = input
        .ops
        .into_iter()
        .take(48)
        .map(|op| match op {
            Op::ReadAt { offset, len } => WindowOp::ReadAt {
                offset: at(offset),
                len: usize::from(len),
            },
            Op::WaitFor { offset, len } => WindowOp::WaitFor {
                offset: at(offset),
                len: u64::from(len),
            },
            Op::CursorRead { cursor, len } => WindowOp::CursorRead {
                cursor: usize::from(cursor),
                len: usize::from(len),
            },
            Op::Seek { cursor, to } => WindowOp::Seek {
                cursor: usize::from(cursor),
                to: at(to),
            },
            Op::NewCursor => WindowOp::NewCursor,
            Op::DropCursor { cursor } => WindowOp::DropCursor {
                cursor: usize::from(cursor),
            },
            Op::Push { len } => WindowOp::Push {
                len: usize::from(len),
            },
            Op::StartConsumer {
                chunk,
                clip,
                inline,
                lagging,
            } => WindowOp::StartConsumer {
                chunk: usize::from(chunk),
                clip,
                inline,
                lagging,
            },
            Op::StopConsumer { consumer } => WindowOp::StopConsumer {
                consumer: usize::from(consumer),
            },
        })
        .collect();
    run_window_model(&setup, &ops);
});
