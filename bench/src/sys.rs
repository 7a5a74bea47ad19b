//! What /proc says: peak RSS of the server, the CPU time of the server, of this load generator
//! and of the whole machine (the rest is PostgreSQL, or SQLite's fsyncs, and the kernel).

use std::process::Command;

/// `VmHWM` (peak resident set) of `pid`, in KiB.
pub fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// utime + stime of a process, in clock ticks.
fn proc_ticks(pid: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 2..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// (busy, total) ticks of all CPUs from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// utime + stime of every process named `postgres`, in clock ticks.
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut sum = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            if comm.trim() == "postgres" {
                sum += proc_ticks(pid);
            }
        }
    }
    sum
}

/// CPU counters at one instant.
pub struct CpuSample {
    server: u64,
    me: u64,
    postgres: u64,
    busy: u64,
    total: u64,
}

impl CpuSample {
    /// `server_pid`: the server, or another process to attribute (pgbench); 0 for none.
    pub fn take(server_pid: u32) -> CpuSample {
        let (busy, total) = machine_ticks();
        CpuSample {
            server: if server_pid == 0 {
                0
            } else {
                proc_ticks(&server_pid.to_string())
            },
            me: proc_ticks("self"),
            postgres: postgres_ticks(),
            busy,
            total,
        }
    }
}

/// Waits (at most `max`) until the machine is quiet: under 15 % busy over one second. Returns
/// the busy share of the last second looked at.
pub fn wait_quiet(max: std::time::Duration) -> f64 {
    let until = std::time::Instant::now() + max;
    loop {
        let (b0, t0) = machine_ticks();
        std::thread::sleep(std::time::Duration::from_secs(1));
        let (b1, t1) = machine_ticks();
        let busy = (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
        if busy < 0.15 || std::time::Instant::now() >= until {
            return busy;
        }
    }
}

/// Where the machine's CPU went during a run, as shares of all cores (1.0 = every core busy).
#[derive(Default, Clone, Copy)]
pub struct CpuSplit {
    pub server: f64,
    pub generator: f64,
    pub postgres: f64,
    /// Everything else: the kernel's own threads, and other work on the machine.
    pub other: f64,
    pub busy: f64,
}

impl CpuSplit {
    pub fn between(a: &CpuSample, b: &CpuSample) -> CpuSplit {
        let total = (b.total - a.total).max(1) as f64;
        let server = (b.server - a.server) as f64 / total;
        let generator = (b.me - a.me) as f64 / total;
        let postgres = b.postgres.saturating_sub(a.postgres) as f64 / total;
        let busy = (b.busy - a.busy) as f64 / total;
        CpuSplit {
            server,
            generator,
            postgres,
            other: (busy - server - generator - postgres).max(0.0),
            busy,
        }
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("({cmd}: {e})"))
}

pub fn now_utc_text() -> String {
    run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// `nproc`, `free -g`, the CPU model, the PostgreSQL version and key settings.
pub fn machine() -> Vec<(String, String)> {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let free = run("free", &["-g"]);
    let mem = free
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!(
                "total {} GiB, used {} GiB, free {} GiB, available {} GiB (`free -g`)",
                f.get(1).unwrap_or(&"?"),
                f.get(2).unwrap_or(&"?"),
                f.get(3).unwrap_or(&"?"),
                f.get(6).unwrap_or(&"?")
            )
        })
        .unwrap_or(free);
    vec![
        ("CPU".into(), model),
        ("cores (`nproc`)".into(), run("nproc", &[])),
        ("memory".into(), mem),
        ("kernel".into(), run("uname", &["-sr"])),
    ]
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when unknown).
pub fn clk_tck() -> f64 {
    run("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0)
}

/// utime + stime of `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    proc_ticks(&pid.to_string()) as f64 / clk_tck()
}
