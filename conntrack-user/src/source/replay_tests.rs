//! The replay source: same messages as recorded, the recorded pace, and
//! the controls a viewer uses.

use std::{path::PathBuf, time::Duration};

use tokio::{sync::mpsc, time::timeout};

use super::replay::{ReplayOptions, ReplaySource};
use crate::{
    event::Message,
    model::{Model, RunInfo},
    trace::{
        WriterOptions,
        tests::{TempDir, messages, record},
    },
    views::stats::json_line,
};

fn recording(dir: &TempDir) -> (PathBuf, Vec<Message>) {
    let path = dir.path("t.ctrace");
    let msgs = messages(4, 30);
    record(&path, &msgs, WriterOptions::default());
    (path, msgs)
}

/// What `ctscope stats --json` would print for these messages.
fn stats_lines(msgs: impl IntoIterator<Item = Message>) -> Vec<String> {
    let mut model = Model::new(RunInfo {
        backend: "tracepoint".into(),
        kernel: "6.18.0-test".into(),
    });
    let mut lines = Vec::new();
    for m in msgs {
        let before = model.intervals();
        model.apply(m);
        if model.intervals() != before
            && let Some(i) = &model.latest
        {
            lines.push(json_line(i));
        }
    }
    lines
}

async fn next(rx: &mut mpsc::Receiver<Message>) -> Option<Message> {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a message within 5 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_what_was_recorded_through_the_same_model() {
    let dir = TempDir::new("replay");
    let (path, msgs) = recording(&dir);
    let (tx, mut rx) = mpsc::channel(4);
    let opts = ReplayOptions {
        speed: None,
        ..ReplayOptions::default()
    };
    let source = ReplaySource::start(&path, opts, tx).await.expect("start");
    assert_eq!(source.info.kernel, "6.18.0-test");
    let mut got = Vec::new();
    while let Some(m) = next(&mut rx).await {
        got.push(m);
    }
    let summary = source.wait().await.expect("replay");
    assert_eq!(got, msgs);
    assert_eq!(summary.messages, msgs.len() as u64);
    assert!(!summary.damaged);
    let lines = stats_lines(got);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines, stats_lines(msgs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_recorded_pace_scaled_by_the_speed() {
    let dir = TempDir::new("pace");
    let (path, msgs) = recording(&dir);
    // The recorder stamped message i at i * 100 ms.
    let span = Duration::from_millis(100) * (msgs.len() as u32 - 1);
    let (tx, mut rx) = mpsc::channel(64);
    let opts = ReplayOptions {
        speed: Some(4.0),
        ..ReplayOptions::default()
    };
    let source = ReplaySource::start(&path, opts, tx).await.expect("start");
    let started = std::time::Instant::now();
    while next(&mut rx).await.is_some() {}
    let took = started.elapsed();
    source.wait().await.expect("replay");
    let want = span / 4;
    assert!(took >= want.mul_f64(0.9), "{took:?} < {want:?}");
    assert!(took < want + Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_step_seek_and_resume() {
    let dir = TempDir::new("controls");
    let (path, msgs) = recording(&dir);
    let (tx, mut rx) = mpsc::channel(64);
    let opts = ReplayOptions {
        speed: None,
        start_paused: true,
        hold_at_end: true,
    };
    let source = ReplaySource::start(&path, opts, tx).await.expect("start");
    let quiet = |rx: &mut mpsc::Receiver<Message>| {
        let r = rx.try_recv();
        assert!(r.is_err(), "nothing while paused: {r:?}");
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    quiet(&mut rx);
    // The first snapshot is the first record: one step sends it.
    source.step();
    assert_eq!(next(&mut rx).await.as_ref(), Some(&msgs[0]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    quiet(&mut rx);
    // The next step sends the events up to and including the next one.
    source.step();
    let mut received = vec![msgs[0].clone()];
    loop {
        let m = next(&mut rx).await.expect("message");
        let snapshot = matches!(m, Message::Sample(_));
        received.push(m);
        if snapshot {
            break;
        }
    }
    assert_eq!(received, msgs[..received.len()]);
    assert!(source.status.borrow().paused);
    // Seeking back starts over: Reset, then nothing until resumed.
    source.seek(Duration::ZERO);
    assert_eq!(next(&mut rx).await, Some(Message::Reset));
    tokio::time::sleep(Duration::from_millis(100)).await;
    quiet(&mut rx);
    // Seeking forward while paused sends what precedes the target.
    source.seek(Duration::from_millis(250));
    let mut after_seek = Vec::new();
    for _ in 0..3 {
        after_seek.push(next(&mut rx).await.expect("message"));
    }
    assert_eq!(after_seek, msgs[..3]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    quiet(&mut rx);
    source.resume();
    let mut rest = Vec::new();
    while rest.len() < msgs.len() - 3 {
        rest.push(next(&mut rx).await.expect("message"));
    }
    assert_eq!(rest, msgs[3..]);
    // Held at the end until stopped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(source.status.borrow().finished);
    let mut model_msgs = received;
    model_msgs.push(Message::Reset);
    model_msgs.extend(after_seek);
    model_msgs.extend(rest);
    // After the reset the model holds what an uninterrupted replay gives.
    let history = |msgs: Vec<Message>| {
        let mut model = Model::default();
        for m in msgs {
            model.apply(m);
        }
        model.history.iter().map(json_line).collect::<Vec<_>>()
    };
    assert_eq!(history(model_msgs), history(msgs));
    source.stop().await.expect("stop");
}
