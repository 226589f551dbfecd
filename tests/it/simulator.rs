//! The simulated daemon's process model (`common::sim::process`), by itself: what the
//! test images' programs do and what health checks answer. The simulator as a whole is
//! held to the real engines by the converge scenarios' `::simulated` runs.

use super::common::sim::process::{Step, check_passes, program};

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn scripts_run_in_order_and_stop_at_exit() {
    let steps = program(&argv(&["sh", "-c", "echo boom from the container; exit 3"]))
        .expect("sh is in the image");
    assert_eq!(
        steps,
        vec![Step::Say("boom from the container".into()), Step::Exit(3)]
    );
    let steps = program(&argv(&["sh", "-c", "false && echo no; echo 'yes it is'"]))
        .expect("sh is in the image");
    assert_eq!(steps, vec![Step::Say("yes it is".into()), Step::Exit(0)]);
}

#[test]
fn httpd_serves_its_port_and_a_missing_program_cannot_start() {
    let steps = program(&argv(&["httpd", "-f", "-v", "-p", "8081", "-h", "/www"]))
        .expect("httpd is in the image");
    assert_eq!(
        steps,
        vec![Step::Serve {
            port: 8081,
            home: Some("/www".into())
        }]
    );
    let error = program(&argv(&["nginx"])).expect_err("nginx is not in the image");
    assert!(error.contains("executable file not found"), "{error}");
}

#[test]
fn health_checks_pass_only_against_what_the_process_serves() {
    let wget = argv(&[
        "CMD",
        "wget",
        "-q",
        "-O",
        "/dev/null",
        "http://127.0.0.1:8080/",
    ]);
    assert!(check_passes(&wget, Some(8080)));
    assert!(!check_passes(&wget, Some(8081)));
    assert!(!check_passes(&wget, None));
    assert!(!check_passes(&argv(&["CMD", "false"]), Some(8080)));
    assert!(check_passes(&argv(&["CMD-SHELL", "true"]), None));
}
