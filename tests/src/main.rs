//! `ferrum-conformance [support] [--op NAME] [--backend NAME] [--require a,b]`
//!
//! Without a subcommand: runs every case on every present backend, one line
//! per result, then `N passed, N failed, N unsupported`; exits 1 on any
//! failure. `support` prints the op x dtype x backend coverage matrix.
//! A backend named by `--require` or `--backend` that is absent is a failure;
//! without `--require`, `FERRUM_REQUIRE_BACKENDS` (as the tests read it) names them.

use std::process::ExitCode;
use std::sync::Arc;

use ferrum_conformance::cases::all_cases;
use ferrum_conformance::harness::{available_backends, check, coverage, print_matrix};
use ferrum_engine::Backend;
use ferrum_engine::ops::OpKind;

#[derive(Default)]
struct Args {
    support: bool,
    op: Option<String>,
    backend: Option<String>,
    require: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "support" => args.support = true,
            "--op" => args.op = Some(value("--op")?),
            "--backend" => args.backend = Some(value("--backend")?),
            "--require" => args.require = value("--require")?.split(',').map(str::to_string).collect(),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if let Some(op) = &args.op
        && !OpKind::ALL.iter().any(|k| k.name() == op)
    {
        let names: Vec<_> = OpKind::ALL.iter().map(|k| k.name()).collect();
        return Err(format!("unknown op {op:?}; ops: {}", names.join(", ")));
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("usage: ferrum-conformance [support] [--op NAME] [--backend NAME] [--require cpu,wgpu]");
            return ExitCode::from(2);
        }
    };
    let mut required = args.require.clone();
    if required.is_empty()
        && let Ok(list) = std::env::var("FERRUM_REQUIRE_BACKENDS")
    {
        required = list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect();
    }
    required.extend(args.backend.clone());

    let mut present: Vec<Arc<dyn Backend>> = Vec::new();
    let mut absent = Vec::new();
    let mut missing_required = 0;
    let known = available_backends();
    for name in &required {
        if !known.iter().any(|(n, _)| n == name) {
            eprintln!("{name}: required but not a backend this build knows");
            missing_required += 1;
        }
    }
    for (name, backend) in known {
        if args.backend.as_ref().is_some_and(|b| *b != name) {
            continue;
        }
        match backend {
            Ok(b) => present.push(b),
            Err(why) => {
                if required.contains(&name) {
                    println!("{name}: FAIL required backend absent ({why})");
                    missing_required += 1;
                }
                absent.push((name, why));
            }
        }
    }

    let cases: Vec<_> =
        all_cases().into_iter().filter(|c| args.op.as_ref().is_none_or(|op| c.kind().name() == op)).collect();
    let mut outcomes = Vec::new();
    for b in &present {
        for case in &cases {
            let o = check(b.as_ref(), case);
            if !args.support {
                println!("{}", o.line());
            }
            outcomes.push(o);
        }
    }

    let failed = outcomes.iter().filter(|o| o.failed()).count() + missing_required;
    if args.support {
        let mut rows = coverage(&present, &outcomes);
        rows.retain(|r| args.op.as_ref().is_none_or(|op| r.kind.name() == op));
        print_matrix(&present, &rows, &absent);
    } else {
        for (name, why) in &absent {
            println!("{name}: absent ({why})");
        }
        let passed = outcomes.iter().filter(|o| o.passed()).count();
        let unsupported = outcomes.len() - passed - (failed - missing_required);
        println!("{passed} passed, {failed} failed, {unsupported} unsupported");
    }
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
