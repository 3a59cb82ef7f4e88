//! Real process groups over Gloo on 127.0.0.1: each test starts its ranks as child processes
//! (this test binary again, running only `worker` with a scenario in the environment) and
//! checks that every rank's own assertions passed. The failure scenarios use a 3 s timeout.

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use poc_dist::{Backend, DistError, Launch, Operation, ProcessGroup, ReduceOp};
use tch::{Kind, Tensor};

/// Set in a child: the scenario it plays.
const SCENARIO: &str = "POC_DIST_TEST_SCENARIO";
/// What a child prints first, so that the parent knows the scenario ran.
const STARTED: &str = "poc-dist worker started:";
/// The timeout of the failure scenarios.
const SHORT: Duration = Duration::from_secs(3);
/// The timeout of the scenarios that should succeed.
const LONG: Duration = Duration::from_secs(20);
/// How long past the timeout a failing rank may take to report (process start-up and a
/// loaded 2-core machine included).
const SLACK: Duration = Duration::from_secs(3);

/// Not a test of its own: the entry point of the child processes the other tests start.
/// Without the scenario variable it does nothing.
#[test]
fn worker() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return;
    };
    println!("{STARTED} {scenario}");
    match scenario.as_str() {
        "collectives" => collectives(),
        "silent-peer" => silent_peer(),
        "early-exit" => early_exit(),
        "never-joined" => never_joined(),
        "missing-master-addr" => env_error("MASTER_ADDR", true),
        "malformed-world-size" => env_error("WORLD_SIZE", false),
        other => panic!("unknown scenario {other}"),
    }
}

// ---------------------------------------------------------------- the parent's side

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

struct Rank {
    rank: usize,
    child: Child,
    log: tempfile::NamedTempFile,
}

/// Starts `ranks` of a `world`-rank group playing `scenario`, with `env` on top of the
/// launcher variables (a value of `None` removes the variable).
fn start(scenario: &str, world: usize, ranks: &[usize], env: &[(&str, Option<&str>)]) -> Vec<Rank> {
    let exe = std::env::current_exe().expect("the test binary");
    let port = free_port().to_string();
    ranks
        .iter()
        .map(|&rank| {
            let log = tempfile::NamedTempFile::new().expect("a log file");
            // One file description for both streams, so that they share one offset.
            let out = log.reopen().expect("the log file");
            let err = out.try_clone().expect("the log file");
            let mut command = Command::new(&exe);
            command
                .args(["worker", "--exact", "--nocapture", "--test-threads=1", "-q"])
                .env(SCENARIO, scenario)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env_remove("GLOO_SOCKET_IFNAME")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            for (name, value) in env {
                match value {
                    Some(value) => command.env(name, value),
                    None => command.env_remove(name),
                };
            }
            let child = command.spawn().expect("start a rank");
            Rank { rank, child, log }
        })
        .collect()
}

/// Waits for every rank (killing them all after `deadline`) and asserts that each passed.
fn expect_all_pass(mut ranks: Vec<Rank>, deadline: Duration) {
    let started = Instant::now();
    let mut status: Vec<Option<ExitStatus>> = vec![None; ranks.len()];
    while status.iter().any(Option::is_none) && started.elapsed() < deadline {
        for (slot, rank) in status.iter_mut().zip(&mut ranks) {
            if slot.is_none() {
                *slot = rank.child.try_wait().expect("poll a rank");
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    let mut failures = Vec::new();
    for (slot, rank) in status.iter().zip(&mut ranks) {
        let log = std::fs::read_to_string(rank.log.path()).unwrap_or_default();
        let outcome = match slot {
            // A filter that matched nothing would exit 0 too: the worker must have run.
            Some(s) if s.success() && log.contains(STARTED) => continue,
            Some(s) if s.success() => "ran no worker".to_owned(),
            Some(s) => format!("exited with {s}"),
            None => {
                let _ = rank.child.kill();
                let _ = rank.child.wait();
                format!("still running after {deadline:?}, killed")
            }
        };
        failures.push(format!("rank {} {outcome}:\n{log}", rank.rank));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn two_ranks_all_reduce_broadcast_and_barrier() {
    expect_all_pass(
        start("collectives", 2, &[0, 1], &[]),
        Duration::from_secs(25),
    );
}

#[test]
fn three_ranks_all_reduce_broadcast_and_barrier() {
    expect_all_pass(
        start("collectives", 3, &[0, 1, 2], &[]),
        Duration::from_secs(25),
    );
}

#[test]
fn a_rank_that_stops_talking_times_the_others_out() {
    expect_all_pass(
        start("silent-peer", 2, &[0, 1], &[]),
        Duration::from_secs(20),
    );
}

#[test]
fn a_rank_that_exits_early_fails_the_others() {
    expect_all_pass(
        start("early-exit", 3, &[0, 1, 2], &[]),
        Duration::from_secs(20),
    );
}

#[test]
fn a_rank_that_never_joins_times_the_others_out() {
    // Rank 0 alone waits for a rank 1 that never comes; in another group, rank 1 alone waits
    // for a store nobody hosts; in a third, ranks 0 and 1 wait for rank 2.
    let mut ranks = start("never-joined", 2, &[0], &[]);
    ranks.extend(start("never-joined", 2, &[1], &[]));
    ranks.extend(start("never-joined", 3, &[0, 1], &[]));
    expect_all_pass(ranks, Duration::from_secs(20));
}

#[test]
fn launcher_variables_are_checked_before_any_network_work() {
    let mut ranks = start("missing-master-addr", 2, &[1], &[("MASTER_ADDR", None)]);
    ranks.extend(start(
        "malformed-world-size",
        2,
        &[1],
        &[("WORLD_SIZE", Some("two"))],
    ));
    expect_all_pass(ranks, Duration::from_secs(20));
}

#[test]
fn a_group_of_one_leaves_tensors_unchanged() {
    let mut group =
        ProcessGroup::new(0, 1, "127.0.0.1", free_port(), LONG, Backend::Gloo).expect("join");
    assert_eq!((group.rank(), group.world_size()), (0, 1));
    let mut tensors = [
        Tensor::from_slice(&[1.5f32, -2.0, 3.25]),
        Tensor::from_slice(&[7i64, 8]),
    ];
    let before: Vec<Tensor> = tensors.iter().map(Tensor::copy).collect();
    group.all_reduce(&mut tensors, ReduceOp::Sum).expect("sum");
    group.broadcast(&mut tensors, 0).expect("broadcast");
    group.barrier().expect("barrier");
    for (after, before) in tensors.iter().zip(&before) {
        assert!(after.equal(before));
    }
    match group.broadcast(&mut tensors, 1) {
        Err(DistError::Invalid {
            rank: 0,
            op: Operation::Broadcast,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    group.shutdown().expect("shutdown");
}

// ---------------------------------------------------------------- the ranks' side

fn launch() -> Launch {
    Launch::from_env().expect("the parent sets every launcher variable")
}

/// The tensors rank `rank` contributes: several shapes, f32, f64 and i64, one of them a
/// non-contiguous view. Every value is a multiple of 1/4 below 2^10, so sums are exact.
fn contribution(rank: usize) -> Vec<Tensor> {
    let r = rank as f64;
    let values = |n: usize, scale: f64| -> Vec<f64> {
        (0..n)
            .map(|i| (i as f64 + 1.0) * scale * (r + 1.0) + r * 0.25)
            .collect()
    };
    let f32s = |n: usize, scale: f64| -> Tensor {
        let v: Vec<f32> = values(n, scale).into_iter().map(|x| x as f32).collect();
        Tensor::from_slice(&v)
    };
    let f64s = |n: usize, scale: f64| Tensor::from_slice(&values(n, scale));
    vec![
        f32s(2, 0.5),
        f32s(2, 1.5),
        f32s(3, 1.0),
        f64s(5, 0.75),
        f32s(6, 0.25).reshape([2, 3]),
        f32s(1, 2.0).reshape(Vec::<i64>::new()),
        f64s(4, 1.25).reshape([2, 2]),
        // [4, 2], transposed from [2, 4]: not contiguous.
        f32s(8, 0.5).reshape([2, 4]).transpose(0, 1),
        Tensor::from_slice(&[rank as i64, 10 * rank as i64, -3]),
    ]
}

/// The elementwise sum of every rank's contribution, computed in f64 (exact here).
fn expected_sums(world: usize) -> Vec<Tensor> {
    let mut sums: Vec<Tensor> = contribution(0)
        .iter()
        .map(|t| t.to_kind(Kind::Double))
        .collect();
    for rank in 1..world {
        for (sum, t) in sums.iter_mut().zip(contribution(rank)) {
            *sum = &*sum + t.to_kind(Kind::Double);
        }
    }
    sums
}

/// `sum / world` in `kind`, computed here in Rust (one correctly rounded division of the
/// exact sum) rather than by the libtorch op under test.
fn average(sum: &Tensor, kind: Kind, world: usize) -> Tensor {
    let exact: Vec<f64> = Vec::try_from(sum.flatten(0, -1)).expect("f64 values");
    let flat = match kind {
        Kind::Float => {
            let v: Vec<f32> = exact.iter().map(|&x| x as f32 / world as f32).collect();
            Tensor::from_slice(&v)
        }
        Kind::Double => {
            Tensor::from_slice(&exact.iter().map(|&x| x / world as f64).collect::<Vec<_>>())
        }
        other => panic!("no average of {other:?}"),
    };
    flat.reshape(sum.size())
}

fn assert_same(got: &[Tensor], want: &[Tensor], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.size(), w.size(), "{what}: tensor {i}'s shape");
        assert_eq!(g.kind(), w.kind(), "{what}: tensor {i}'s dtype");
        assert!(g.equal(w), "{what}: tensor {i} is {g} and should be {w}");
    }
}

fn collectives() {
    let launch = launch();
    let (rank, world) = (launch.rank, launch.world_size);
    let mut group = ProcessGroup::from_env(LONG, Backend::Gloo).expect("join");
    assert_eq!((group.rank(), group.world_size()), (rank, world));

    let sums = expected_sums(world);
    let kinds: Vec<Kind> = contribution(0).iter().map(Tensor::kind).collect();
    let want_sum: Vec<Tensor> = sums
        .iter()
        .zip(&kinds)
        .map(|(s, &k)| s.to_kind(k))
        .collect();
    let want_average: Vec<Tensor> = sums
        .iter()
        .zip(&kinds)
        .take(kinds.len() - 1)
        .map(|(s, &k)| average(s, k, world))
        .collect();

    // 16-byte buckets: most tensors go alone, the first two f32 tensors share one, and the
    // [2, 3] and [4, 2] tensors are larger than a bucket.
    for bucket_bytes in [16, poc_dist::DEFAULT_BUCKET_BYTES] {
        group.set_bucket_bytes(bucket_bytes);
        let mut tensors = contribution(rank);
        group.all_reduce(&mut tensors, ReduceOp::Sum).expect("sum");
        assert_same(
            &tensors,
            &want_sum,
            &format!("sum, {bucket_bytes}-byte buckets"),
        );

        let mut floats = contribution(rank);
        floats.pop();
        group
            .all_reduce(&mut floats, ReduceOp::Average)
            .expect("average");
        assert_same(
            &floats,
            &want_average,
            &format!("average, {bucket_bytes}-byte buckets"),
        );
    }

    // An average of integers is refused on every rank alike, and the group goes on.
    let mut with_ints = contribution(rank);
    match group.all_reduce(&mut with_ints, ReduceOp::Average) {
        Err(DistError::Invalid {
            rank: r,
            op: Operation::AllReduce,
            message,
        }) => {
            assert_eq!(r, rank);
            assert!(message.contains("tensor 8 is Long"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    group.set_bucket_bytes(16);
    for root in [0, 1] {
        let mut tensors = contribution(rank);
        group.broadcast(&mut tensors, root).expect("broadcast");
        assert_same(
            &tensors,
            &contribution(root),
            &format!("broadcast from {root}"),
        );
    }

    // Rank 1 comes late; nobody may leave before it arrives.
    if rank == 1 {
        thread::sleep(Duration::from_millis(500));
    }
    let entered = Instant::now();
    group.barrier().expect("barrier");
    if rank == 0 {
        assert!(
            entered.elapsed() >= Duration::from_millis(200),
            "{:?}",
            entered.elapsed()
        );
    }
    group.barrier().expect("barrier");
    group.shutdown().expect("shutdown");
    println!("rank {rank}: collectives ok");
}

fn silent_peer() {
    let rank = launch().rank;
    let mut group = ProcessGroup::from_env(SHORT, Backend::Gloo).expect("join");
    if rank == 1 {
        // Alive and connected, but never joins the all-reduce.
        thread::sleep(SHORT + SLACK);
        return;
    }
    let mut tensors = [Tensor::ones([4], (Kind::Float, tch::Device::Cpu))];
    let started = Instant::now();
    let error = group.all_reduce(&mut tensors, ReduceOp::Sum).unwrap_err();
    let took = started.elapsed();
    assert!(took < SHORT + SLACK, "took {took:?}");
    match &error {
        DistError::Timeout {
            rank: 0,
            op: Operation::AllReduce,
            timeout,
            ..
        } => {
            assert_eq!(*timeout, SHORT);
        }
        other => panic!("{other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.starts_with("rank 0: all_reduce timed out after 3 s waiting for the other ranks"),
        "{message}"
    );
    println!("{message}");
}

fn early_exit() {
    let rank = launch().rank;
    let mut group = ProcessGroup::from_env(SHORT, Backend::Gloo).expect("join");
    if rank == 1 {
        // Gone without a word, as a crashed process is: no shutdown, no destructors.
        std::process::exit(0);
    }
    let mut tensors = [Tensor::ones([4], (Kind::Float, tch::Device::Cpu))];
    let started = Instant::now();
    let error = group.all_reduce(&mut tensors, ReduceOp::Sum).unwrap_err();
    let took = started.elapsed();
    assert!(took < SHORT + SLACK, "took {took:?}");
    match &error {
        DistError::Timeout {
            rank: r,
            op: Operation::AllReduce,
            ..
        }
        | DistError::Failed {
            rank: r,
            op: Operation::AllReduce,
            ..
        } => assert_eq!(*r, rank),
        other => panic!("{other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("rank {rank}: all_reduce ")),
        "{message}"
    );
    println!("{message}");
}

fn never_joined() {
    let rank = launch().rank;
    let started = Instant::now();
    let error = ProcessGroup::from_env(SHORT, Backend::Gloo).unwrap_err();
    let took = started.elapsed();
    assert!(took < SHORT + SLACK, "took {took:?}");
    let message = error.to_string();
    match &error {
        DistError::Timeout {
            rank: r,
            op: Operation::Connect,
            ..
        } => {
            assert_eq!(*r, rank);
            let head =
                format!("rank {rank}: connect timed out after 3 s waiting for the other ranks");
            assert!(message.starts_with(&head), "{message}");
        }
        // Rank 0 gave up first and took its store with it.
        DistError::Failed {
            rank: r,
            op: Operation::Connect,
            detail,
        } if rank != 0 => {
            assert_eq!(*r, rank);
            assert!(detail.contains("closed"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    println!("{message}");
}

fn env_error(variable: &str, missing: bool) {
    let started = Instant::now();
    let error = ProcessGroup::from_env(SHORT, Backend::Gloo).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    match &error {
        DistError::MissingVar { name } if missing => assert_eq!(*name, variable),
        DistError::MalformedVar { name, .. } if !missing => assert_eq!(*name, variable),
        other => panic!("{other:?}"),
    }
    println!("{error}");
}
