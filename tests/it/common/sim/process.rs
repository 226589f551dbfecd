//! What a simulated container's main process does, read from its command line: the
//! programs the test images run (busybox `httpd`, `sleep`, `sh -c` scripts of `echo`,
//! `exit`, `sleep`, `true`, `false`) and what health-check commands answer. A program the
//! images lack fails its start, as on a real daemon.

use std::time::Duration;

/// One step of a process's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A line on stdout.
    Say(String),
    /// A line on stderr.
    Complain(String),
    /// Waits.
    Sleep(Duration),
    /// Serves HTTP on `port` (inside the container) from the directory `home` (`-h`; the
    /// working directory when `None`) until stopped.
    Serve { port: u16, home: Option<String> },
    /// Runs until stopped.
    Forever,
    /// Exits with this code.
    Exit(i64),
}

/// What `argv` (entrypoint and command) does once started, or why it cannot start.
pub fn program(argv: &[String]) -> Result<Vec<Step>, String> {
    let Some(first) = argv.first() else {
        return Err("no command specified".into());
    };
    let name = first.rsplit('/').next().unwrap_or(first);
    let args = &argv[1..];
    match name {
        "sh" => match args {
            [flag, script, ..] if flag == "-c" => Ok(script_steps(script)),
            _ => Ok(vec![Step::Exit(0)]),
        },
        _ => {
            let mut steps = Vec::new();
            match command(name, args, &mut steps) {
                Flow::Known(code) => {
                    if !matches!(steps.last(), Some(Step::Serve { .. } | Step::Forever)) {
                        steps.push(Step::Exit(code));
                    }
                    Ok(steps)
                }
                Flow::Unknown => Err(format!(
                    "failed to create task for container: failed to create shim task: OCI \
                     runtime create failed: runc create failed: unable to start container \
                     process: exec: \"{first}\": executable file not found in $PATH: unknown"
                )),
            }
        }
    }
}

enum Flow {
    /// A program the image has; its exit code (when it ends on its own).
    Known(i64),
    /// Not in the image.
    Unknown,
}

/// Runs one simple command into `steps`.
fn command(name: &str, args: &[String], steps: &mut Vec<Step>) -> Flow {
    match name {
        "httpd" => {
            let port = args
                .iter()
                .position(|a| a == "-p")
                .and_then(|i| args.get(i + 1))
                .and_then(|p| p.rsplit(':').next()?.parse().ok())
                .unwrap_or(80);
            let home = args
                .iter()
                .position(|a| a == "-h")
                .and_then(|i| args.get(i + 1))
                .cloned();
            steps.push(Step::Serve { port, home });
            Flow::Known(0)
        }
        "sleep" => match args.first().map(String::as_str) {
            Some("infinity") => {
                steps.push(Step::Forever);
                Flow::Known(0)
            }
            Some(seconds) => match seconds.parse::<f64>() {
                Ok(s) if s >= 0.0 => {
                    steps.push(Step::Sleep(Duration::from_secs_f64(s)));
                    Flow::Known(0)
                }
                _ => {
                    steps.push(Step::Complain(format!("sleep: invalid number '{seconds}'")));
                    Flow::Known(1)
                }
            },
            None => Flow::Known(1),
        },
        "echo" => {
            steps.push(Step::Say(args.join(" ")));
            Flow::Known(0)
        }
        "true" => Flow::Known(0),
        "false" => Flow::Known(1),
        "tail" if args.iter().any(|a| a == "-f") => {
            steps.push(Step::Forever);
            Flow::Known(0)
        }
        _ => Flow::Unknown,
    }
}

/// The steps of an `sh -c` script: commands separated by `;` or `&&`.
fn script_steps(script: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut status = 0;
    for (command_words, after_and) in split_script(script) {
        if after_and && status != 0 {
            continue;
        }
        let Some((name, args)) = command_words.split_first() else {
            continue;
        };
        if name == "exit" {
            let code = args.first().and_then(|c| c.parse().ok()).unwrap_or(status);
            steps.push(Step::Exit(code));
            return steps;
        }
        let name = if name == "exec" {
            match args.split_first() {
                Some((inner, rest)) => {
                    if let Flow::Unknown = command(inner, rest, &mut steps) {
                        steps.push(Step::Complain(format!(
                            "sh: exec: line 1: {inner}: not found"
                        )));
                        steps.push(Step::Exit(127));
                    } else if !matches!(steps.last(), Some(Step::Serve { .. } | Step::Forever)) {
                        steps.push(Step::Exit(0));
                    }
                    return steps;
                }
                None => continue,
            }
        } else {
            name
        };
        status = match command(name, args, &mut steps) {
            Flow::Known(code) => code,
            Flow::Unknown => {
                steps.push(Step::Complain(format!("sh: {name}: not found")));
                127
            }
        };
        if matches!(steps.last(), Some(Step::Serve { .. } | Step::Forever)) {
            return steps;
        }
    }
    steps.push(Step::Exit(status));
    steps
}

/// Splits a script into commands (shell words, quotes honoured), each with whether it
/// follows `&&`.
fn split_script(script: &str) -> Vec<(Vec<String>, bool)> {
    let mut commands = Vec::new();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut after_and = false;
    let mut chars = script.chars().peekable();
    let end_word = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, ';' | '\n') => {
                end_word(&mut words, &mut word, &mut in_word);
                commands.push((std::mem::take(&mut words), after_and));
                after_and = false;
            }
            (None, '&') if chars.peek() == Some(&'&') => {
                chars.next();
                end_word(&mut words, &mut word, &mut in_word);
                commands.push((std::mem::take(&mut words), after_and));
                after_and = true;
            }
            (None, c) if c.is_whitespace() => end_word(&mut words, &mut word, &mut in_word),
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    end_word(&mut words, &mut word, &mut in_word);
    commands.push((words, after_and));
    commands
}

/// Whether a health check (`Healthcheck.Test`: `["CMD", …]` or `["CMD-SHELL", script]`)
/// passes for a container whose process serves `serving` (a port inside it).
pub fn check_passes(test: &[String], serving: Option<u16>) -> bool {
    let argv: Vec<String> = match test.split_first() {
        Some((kind, rest)) if kind == "CMD" => rest.to_vec(),
        Some((kind, rest)) if kind == "CMD-SHELL" => {
            let script = rest.first().map(String::as_str).unwrap_or_default();
            return split_script(script)
                .into_iter()
                .all(|(words, _)| words.is_empty() || command_passes(&words, serving));
        }
        _ => return false,
    };
    command_passes(&argv, serving)
}

fn command_passes(argv: &[String], serving: Option<u16>) -> bool {
    let Some((name, args)) = argv.split_first() else {
        return false;
    };
    match name.rsplit('/').next().unwrap_or(name) {
        "true" => true,
        "exit" => args.first().is_some_and(|c| c == "0"),
        "wget" | "curl" | "nc" => args
            .iter()
            .find_map(|a| local_port(a))
            .is_some_and(|port| serving == Some(port)),
        // `false`, and every program the image lacks (exit 127).
        _ => false,
    }
}

/// The port of a URL on the container's own loopback (`http://127.0.0.1:8080/`).
fn local_port(arg: &str) -> Option<u16> {
    let rest = arg.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, 80),
    };
    matches!(host, "127.0.0.1" | "localhost").then_some(port)
}
