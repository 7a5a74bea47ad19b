//! The binary as a newcomer runs it: with no configuration at all it serves on 127.0.0.1:8080,
//! on an SQLite file it creates under `data/`, with a signing secret it creates beside it.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn with_no_configuration_it_serves_on_8080_from_an_embedded_sqlite_file() {
    let dir = std::env::temp_dir().join(format!("tiaojie-serve-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tiaojie"))
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tiaojie");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let outcome = std::panic::catch_unwind(|| {
        assert!(
            first.contains("listening on http://127.0.0.1:8080"),
            "{first:?}"
        );
        assert!(first.contains("sqlite"), "{first:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            match std::net::TcpStream::connect("127.0.0.1:8080") {
                Ok(mut stream) => {
                    stream
                        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                        .unwrap();
                    let mut answer = String::new();
                    stream.read_to_string(&mut answer).unwrap();
                    break answer;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("nothing listens on 8080: {e}"),
            }
        };
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(dir.join("data/tiaojie.db").exists());
        assert!(dir.join("data/jwt-secret").exists());
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn an_unreachable_database_is_a_one_line_error_at_start() {
    let dir = std::env::temp_dir().join(format!("tiaojie-serve-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_tiaojie"))
        .current_dir(&dir)
        .env_clear()
        .env(
            "TIAOJIE_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .env("TIAOJIE_LISTEN", "127.0.0.1:0")
        .env("TIAOJIE_DB_ACQUIRE_TIMEOUT_SECS", "2")
        .output()
        .expect("run tiaojie");
    assert!(!output.status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("tiaojie: "), "{stderr}");
    assert!(
        lines[0].contains("cannot reach PostgreSQL at 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn a_malformed_rooms_registry_stops_the_server_naming_the_line() {
    let dir = std::env::temp_dir().join(format!("tiaojie-serve-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rooms.toml"),
        "[[room]]\nid = \"R01\"\nname = \"甲\"\nkind = \"moon\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tiaojie"))
        .current_dir(&dir)
        .env_clear()
        .env("TIAOJIE_ROOMS", dir.join("rooms.toml"))
        .env("TIAOJIE_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run tiaojie");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rooms.toml: line 4"), "{stderr}");
}
