//! Reading the launcher's variables, and the checks `ProcessGroup` makes before any network
//! work. In process: nothing here opens a socket.

use std::collections::HashMap;
use std::time::Duration;

use poc_dist::{Backend, DistError, Launch, Operation, ProcessGroup};

fn launch(vars: &[(&str, &str)]) -> Result<Launch, DistError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Launch::from_vars(|name| vars.get(name).cloned())
}

const TORCHRUN: [(&str, &str); 5] = [
    ("RANK", "1"),
    ("WORLD_SIZE", "4"),
    ("LOCAL_RANK", "1"),
    ("MASTER_ADDR", "10.1.2.3"),
    ("MASTER_PORT", "29500"),
];

fn without(name: &str) -> Vec<(&'static str, &'static str)> {
    TORCHRUN
        .iter()
        .copied()
        .filter(|(k, _)| *k != name)
        .collect()
}

fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut vars = without(name);
    vars.push((name, value));
    vars
}

#[test]
fn torchrun_variables_are_read() {
    assert_eq!(
        launch(&TORCHRUN).unwrap(),
        Launch {
            rank: 1,
            world_size: 4,
            local_rank: Some(1),
            master_addr: "10.1.2.3".to_owned(),
            master_port: 29500,
        }
    );
    assert_eq!(launch(&without("LOCAL_RANK")).unwrap().local_rank, None);
}

#[test]
fn a_missing_variable_is_named() {
    for name in ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] {
        match launch(&without(name)) {
            Err(DistError::MissingVar { name: missing }) => assert_eq!(missing, name),
            other => panic!("without {name}: {other:?}"),
        }
    }
    let message = launch(&without("MASTER_ADDR")).unwrap_err().to_string();
    assert!(
        message.starts_with("environment variable MASTER_ADDR is not set"),
        "{message}"
    );
}

#[test]
fn a_malformed_variable_is_named_with_its_value() {
    let cases = [
        ("WORLD_SIZE", "two"),
        ("WORLD_SIZE", "0"),
        ("WORLD_SIZE", "-1"),
        ("RANK", "x"),
        ("RANK", "4"),
        ("LOCAL_RANK", "first"),
        ("MASTER_ADDR", " "),
        ("MASTER_PORT", "0"),
        ("MASTER_PORT", "70000"),
        ("MASTER_PORT", "http"),
    ];
    for (name, value) in cases {
        match launch(&with(name, value)) {
            Err(DistError::MalformedVar {
                name: bad,
                value: got,
                ..
            }) => {
                assert_eq!((bad, got.as_str()), (name, value));
            }
            other => panic!("{name}={value}: {other:?}"),
        }
    }
    let message = launch(&with("WORLD_SIZE", "two")).unwrap_err().to_string();
    assert_eq!(
        message,
        "environment variable WORLD_SIZE=\"two\" is not a non-negative integer"
    );
    let message = launch(&with("RANK", "4")).unwrap_err().to_string();
    assert_eq!(
        message,
        "environment variable RANK=\"4\" is not below WORLD_SIZE (4)"
    );
}

#[test]
fn bad_arguments_are_refused_before_connecting() {
    // Nothing listens on these addresses; an attempt to connect would take the timeout.
    let timeout = Duration::from_secs(30);
    let cases = [
        ProcessGroup::new(2, 2, "127.0.0.1", 29500, timeout, Backend::Gloo),
        ProcessGroup::new(0, 0, "127.0.0.1", 29500, timeout, Backend::Gloo),
        ProcessGroup::new(0, 2, "127.0.0.1", 0, timeout, Backend::Gloo),
        ProcessGroup::new(0, 2, "127.0.0.1", 29500, Duration::ZERO, Backend::Gloo),
        ProcessGroup::new(0, 2, "127.0.0.1\0", 29500, timeout, Backend::Gloo),
    ];
    for case in cases {
        match case {
            Err(DistError::Invalid {
                op: Operation::Connect,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
    let message = ProcessGroup::new(2, 2, "127.0.0.1", 29500, timeout, Backend::Gloo)
        .unwrap_err()
        .to_string();
    assert_eq!(message, "rank 2: connect: rank 2 is not in 0..2");
}

#[test]
fn nccl_is_refused_before_connecting_when_it_cannot_run() {
    assert_eq!(Backend::Nccl.is_available(), poc_dist::shim_has_nccl());
    assert!(Backend::Gloo.is_available());
    // Compiled in and with a device to run on: nothing to refuse.
    if Backend::Nccl.is_available() && tch::Cuda::device_count() > 0 {
        return;
    }
    let started = std::time::Instant::now();
    // Nothing listens there: had it tried to connect, it would have waited 30 s.
    let error = ProcessGroup::new(
        1,
        2,
        "127.0.0.1",
        29500,
        Duration::from_secs(30),
        Backend::Nccl,
    )
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let DistError::Unavailable {
        rank: 1,
        backend: Backend::Nccl,
        reason,
    } = &error
    else {
        panic!("{error:?}");
    };
    match Backend::Nccl.unavailable_reason() {
        // Compiled out: the reason build.rs recorded.
        Some(recorded) => assert_eq!(reason, recorded),
        // Compiled in, but this machine has no GPU.
        None => assert!(reason.contains("CUDA device"), "{reason}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("rank 1: the nccl backend is not available: "),
        "{error}"
    );
}
