//! Lease-plus-heartbeat round trips per second against a real coordinator
//! on loopback, with many simulated workers:
//!
//!     cargo bench -p minima-e2e --bench leases -- [--workers 500] [--seconds 10]
//!
//! It writes a sweep of 100,000 quick tasks, starts `coordinator` with no
//! local workers, and runs the simulated workers as tokio tasks, each on its
//! own connection: register, then lease a task and renew it with one
//! heartbeat, again and again. A round trip is one lease and one heartbeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use minima_e2e::start_coordinator;
use minima_shared::proto::coordinator_client::CoordinatorClient;
use minima_shared::proto::{HeartbeatRequest, LeaseRequest, RegisterRequest};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let workers = value("--workers", 500) as usize;
    let seconds = value("--seconds", 10);

    let dir = tempfile::tempdir().unwrap();
    let seeds: Vec<String> = (0..2000).map(|s| s.to_string()).collect();
    let sweep = format!(
        "name: leases\ntask: sequence-classification\ngrid:\n  - {{arch: [lstm, gru], layers: [1, 2, 3, 4, 5], hidden: [8, 16, 24, 32, 40]}}\nseeds: [{}]\n",
        seeds.join(", ")
    );
    std::fs::write(dir.path().join("leases.yaml"), sweep).unwrap();
    let (mut coordinator, url) = start_coordinator(
        dir.path(),
        &[
            "--sweep",
            "leases.yaml",
            "--local-workers",
            "0",
            "--lease-timeout-ms",
            "600000",
        ],
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let trips = Arc::new(AtomicU64::new(0));
    let (rate, p50, p99) = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut handles = Vec::new();
        for k in 0..workers {
            let (url, trips) = (url.clone(), trips.clone());
            handles.push(tokio::spawn(async move {
                let mut client = CoordinatorClient::connect(url).await.expect("connects");
                let worker_id = client
                    .register(RegisterRequest {
                        name: format!("sim-{k}"),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .worker_id;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let lease = client
                        .lease(LeaseRequest {
                            worker_id: worker_id.clone(),
                        })
                        .await
                        .unwrap();
                    let Some(a) = lease.into_inner().assignment else {
                        break;
                    };
                    client
                        .heartbeat(HeartbeatRequest {
                            worker_id: worker_id.clone(),
                            lease_ids: vec![a.lease_id],
                        })
                        .await
                        .unwrap();
                    latencies.push(start.elapsed().as_secs_f64());
                    trips.fetch_add(1, Ordering::Relaxed);
                }
                latencies
            }));
        }
        let started = Instant::now();
        let mut latencies = Vec::new();
        for h in handles {
            latencies.extend(h.await.unwrap());
        }
        latencies.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        (
            trips.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
            pick(0.5),
            pick(0.99),
        )
    });
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    println!(
        "workers {workers}: {:.0} lease+heartbeat round trips/s, median {:.1} ms, p99 {:.1} ms",
        rate,
        p50 * 1e3,
        p99 * 1e3
    );
}
