//! The load generator: N closed-loop virtual clients, one keep-alive connection each, for a
//! warm-up and then a measured window. Every answer is counted by status; every non-2xx and every
//! transport error is kept (with a sample body) so a run with errors can be explained or flagged.

use crate::http::Conn;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the clients do.
#[derive(Clone)]
pub enum Workload {
    /// Each client loops over new cases: file → accept → assign → session → resolve → follow-up.
    Commands,
    /// `GET <path>` again and again.
    Get(String),
}

/// The outcome of one run.
#[derive(Default)]
pub struct Outcome {
    /// Latencies (µs) of the answers completed inside the measured window.
    pub latencies_us: Vec<u32>,
    /// Answers by status inside the window; status 0 = transport error.
    pub statuses: BTreeMap<u16, u64>,
    /// The first body seen for each non-2xx status (transport errors: the error text).
    pub samples: BTreeMap<u16, String>,
    /// The measured window.
    pub window: Duration,
    /// Commands only: cases taken through all six steps inside the window.
    pub cases_completed: u64,
    /// Every answer, warm-up and edges included (to divide database counters by).
    pub all_answers: u64,
}

impl Outcome {
    pub fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
    pub fn errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }
    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }
    pub fn rate(&self) -> f64 {
        self.total() as f64 / self.window.as_secs_f64()
    }
    fn merge(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        for (s, b) in other.samples {
            self.samples.entry(s).or_insert(b);
        }
        self.cases_completed += other.cases_completed;
        self.all_answers += other.all_answers;
    }
    /// Percentile `p` (0–100) in milliseconds; nearest rank on the sorted latencies.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let n = self.latencies_us.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, n) - 1] as f64 / 1000.0
    }
}

/// A tiny xorshift generator: enough to spread cases over rooms and vary texts.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CATEGORIES: &[&str] = &[
    "membership",
    "governance",
    "contract",
    "labor",
    "intellectual_property",
    "fees",
    "commercial",
    "tort",
    "other",
];
const SOURCES: &[&str] = &[
    "party_application",
    "own_initiative",
    "court_referral",
    "government_referral",
    "police_referral",
    "other_referral",
];

/// The body of a filing in room `room` (R01–R30).
pub fn file_body(rng_seed: u64, room: u32) -> Vec<u8> {
    let mut rng = Rng(rng_seed | 1);
    let n = rng.below(90_000_000) + 10_000_000;
    json!({
        "room_id": format!("R{room:02}"),
        "category": CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize],
        "source": SOURCES[rng.below(SOURCES.len() as u64) as usize],
        "summary": "会员单位之间的货款纠纷：申请人称被申请人拖欠货款，经多次催告仍未支付。",
        "claims": "请求被申请人支付拖欠货款及逾期利息。",
        "amount_in_dispute": format!("{}.{:02}", 1000 + rng.below(500_000), rng.below(100)),
        "industry": "制造业",
        "parties": [
            {"role": "applicant", "kind": "person", "name": "张三",
             "id_number": format!("4403051990{n:08}"), "phone": format!("138{n:08}")},
            {"role": "respondent", "kind": "organization", "name": "深圳某材料有限公司",
             "credit_code": "91350100M000100Y43", "representative": "李四"}
        ]
    })
    .to_string()
    .into_bytes()
}

struct Steps {
    accept: Vec<u8>,
    assign: Vec<u8>,
    session: Vec<u8>,
    resolve: Vec<u8>,
    follow_up: Vec<u8>,
}

fn steps() -> Steps {
    Steps {
        accept: json!({"note": "材料齐全，予以受理"})
            .to_string()
            .into_bytes(),
        assign: json!({"mediator_id": "m-0001", "name": "王调解", "lead": true})
            .to_string()
            .into_bytes(),
        session: json!({"summary": "第一次调解会议：双方陈述意见，核对货款金额。",
                         "attendees": ["张三", "李四", "王调解"]})
        .to_string()
        .into_bytes(),
        resolve: json!({"agreement": "written",
                         "terms": "被申请人于三十日内分两期支付货款，申请人放弃利息请求。",
                         "agreed_amount": "10000.00", "performance_due": "2030-12-31"})
        .to_string()
        .into_bytes(),
        follow_up: json!({"performance": "full", "satisfaction": 5, "note": "回访：已按期履行"})
            .to_string()
            .into_bytes(),
    }
}

/// Runs `clients` virtual clients for `warmup` + `measure`; only answers completed inside the
/// measured window count.
pub async fn run(
    addr: SocketAddr,
    token: &str,
    workload: &Workload,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> Outcome {
    let start = Instant::now();
    let window_start = start + warmup;
    let deadline = window_start + measure;
    let mut handles = Vec::new();
    for c in 0..clients {
        let token = token.to_string();
        let workload = workload.clone();
        handles.push(tokio::spawn(async move {
            client(addr, token, workload, c, window_start, deadline).await
        }));
    }
    let mut total = Outcome::default();
    for h in handles {
        total.merge(h.await.expect("client task panicked"));
    }
    total.window = measure;
    total.latencies_us.sort_unstable();
    total
}

async fn client(
    addr: SocketAddr,
    token: String,
    workload: Workload,
    index: usize,
    window_start: Instant,
    deadline: Instant,
) -> Outcome {
    let mut conn = Conn::new(addr, Some(&token));
    let mut out = Outcome::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((index as u64 + 1) * 0x1000_0001));
    let steps = steps();
    // Commands: the case in progress and the next step (0 = file).
    let mut case_path = String::new();
    let mut step = 0u8;
    let mut case_started_in_window = false;
    loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        let result = match &workload {
            Workload::Get(path) => conn.request("GET", path, None).await,
            Workload::Commands => {
                if step == 0 {
                    let room = (rng.below(30) + 1) as u32;
                    let body = file_body(rng.next(), room);
                    conn.request("POST", "/api/v1/cases", Some(&body)).await
                } else {
                    let (suffix, body) = match step {
                        1 => ("/accept", &steps.accept),
                        2 => ("/mediators", &steps.assign),
                        3 => ("/sessions", &steps.session),
                        4 => ("/resolve", &steps.resolve),
                        _ => ("/follow-ups", &steps.follow_up),
                    };
                    let path = format!("{case_path}{suffix}");
                    conn.request("POST", &path, Some(body)).await
                }
            }
        };
        let t1 = Instant::now();
        let counted = t0 >= window_start && t1 <= deadline;
        if result.is_ok() {
            out.all_answers += 1;
        }
        let status = match &result {
            Ok(r) => r.status,
            Err(_) => 0,
        };
        if counted {
            out.latencies_us
                .push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
            *out.statuses.entry(status).or_default() += 1;
            if !(200..300).contains(&status) && !out.samples.contains_key(&status) {
                let sample = match &result {
                    Ok(r) => String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned(),
                    Err(e) => e.to_string(),
                };
                out.samples.insert(status, sample);
            }
        }
        if let Workload::Commands = workload {
            match result {
                Ok(r) if (200..300).contains(&r.status) => {
                    if step == 0 {
                        match r.location {
                            Some(loc) => {
                                case_path = loc;
                                step = 1;
                                case_started_in_window = counted;
                            }
                            None => {
                                // A filing without Location: count it as an error of its own.
                                if counted {
                                    // Recount the 2xx as pseudo-status 1 (an error).
                                    if let Some(n) = out.statuses.get_mut(&r.status) {
                                        *n -= 1;
                                    }
                                    *out.statuses.entry(1).or_default() += 1;
                                    out.samples
                                        .entry(1)
                                        .or_insert_with(|| "201 without Location".into());
                                }
                            }
                        }
                    } else if step == 5 {
                        if case_started_in_window && counted {
                            out.cases_completed += 1;
                        }
                        step = 0;
                    } else {
                        step += 1;
                    }
                }
                // Any failure: abandon this case and start a new one.
                _ => step = 0,
            }
        }
    }
    out
}
