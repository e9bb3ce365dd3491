//! Runs external commands under limits and prints their outcomes.
//!
//! ```text
//! cargo run -p pynisher --example command
//! cargo run -p pynisher --example command -- --wall-time 2s -- sleep 5
//! ```
//!
//! With arguments, the first ones may set `--wall-time`, `--cpu-time` and
//! `--memory` (units as in `Limits`), and everything after `--` is the
//! command. Without arguments it runs a few demonstrations.

use std::time::Duration;

use pynisher::{Command, Limits, Outcome};

fn show(what: &str, outcome: &Outcome) {
    let exit = outcome
        .exit
        .map_or_else(|| "-".to_owned(), |e| e.to_string());
    println!(
        "{what:<38} {:<10} {exit:<22} wall {:>6.3} s  cpu {:>6.3} s  peak {:>6.1} MB",
        outcome.status.as_str(),
        outcome.usage.wall_time.as_secs_f64(),
        outcome.usage.cpu_time().as_secs_f64(),
        outcome.usage.peak_memory as f64 / (1 << 20) as f64,
    );
}

fn from_arguments(args: &[String]) -> Result<(), pynisher::Error> {
    let mut limits = Limits::new();
    let mut rest = args;
    while let [option, value, tail @ ..] = rest {
        match option.as_str() {
            "--wall-time" => limits.wall_time = Some(pynisher::parse_duration(option, value)?),
            "--cpu-time" => limits.cpu_time = Some(pynisher::parse_duration(option, value)?),
            "--memory" => limits.memory = Some(pynisher::parse_bytes(option, value)?),
            _ => break,
        }
        rest = tail;
    }
    let command = match rest {
        [dash, command @ ..] if dash == "--" && !command.is_empty() => command,
        [] | [_] => {
            eprintln!(
                "usage: command [--wall-time T] [--cpu-time T] [--memory M] -- PROGRAM [ARGS...]"
            );
            std::process::exit(2);
        }
        command => command,
    };
    let outcome = Command::new(&command[0]).args(&command[1..]).run(&limits)?;
    show(&command.join(" "), &outcome);
    println!("{}", outcome.detail);
    Ok(())
}

fn main() -> Result<(), pynisher::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return from_arguments(&args);
    }

    let limits = Limits::new().wall_time(Duration::from_millis(500));
    let outcome = Command::new("sleep").arg("10").run(&limits)?;
    show("sleep 10, wall_time=0.5 s", &outcome);

    let limits = Limits::new()
        .cpu_time(Duration::from_millis(500))
        .wall_time(Duration::from_secs(10));
    let outcome = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .run(&limits)?;
    show("busy shell loop, cpu_time=0.5 s", &outcome);

    let outcome = Command::new("sh")
        .args(["-c", "echo hello from $0; exit 3"])
        .run(&Limits::new())?;
    show("exit 3", &outcome);

    match Command::new("surely-not-installed").run(&Limits::new()) {
        Ok(outcome) => show("surely-not-installed", &outcome),
        Err(err) => println!("{:<38} {err}", "surely-not-installed"),
    }
    Ok(())
}
