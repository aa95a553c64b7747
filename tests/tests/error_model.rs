//! Errors are told apart by kind, in one place: the runtime's classifier reads the SDK's
//! error codes and HTTP statuses (`crates/runtime/src/error.rs`), the warehouse reads
//! SQLSTATE classes, and the stream sources read the SDK's typed variants. No code
//! decides anything from an error's message text, and no other code matches AWS error
//! codes as strings.

use pipeline_tests::sources::{root, rust_files, without_unit_tests};

/// Why a line of source decides by text, if it does.
fn text_classification(line: &str) -> Option<&'static str> {
    let compares = [".contains(", ".starts_with(", ".ends_with(", "== \"", "!= \""];
    if line.contains("message()") && compares.iter().any(|c| line.contains(c)) {
        return Some("compares an error's message text");
    }
    if ["to_string().contains(", "to_string().starts_with(", "to_string() == \""]
        .iter()
        .any(|p| line.contains(p))
    {
        return Some("compares an error's display text");
    }
    if line.contains("Exception\"") || line.contains("\"AccessDenied") || line.contains("\"Throttling") {
        return Some("matches an AWS error code as a string outside the runtime's classifier");
    }
    None
}

#[test]
fn no_error_is_classified_by_its_message_text() {
    let crates = root().join("crates");
    let classifier = crates.join("runtime/src/error.rs");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates/").filter_map(|e| e.ok()) {
        let src = entry.path().join("src");
        if src.is_dir() {
            files.extend(rust_files(&src));
        }
    }
    assert!(files.len() > 50, "found the sources ({} files)", files.len());
    let mut found = Vec::new();
    for file in files.iter().filter(|f| **f != classifier) {
        let text = std::fs::read_to_string(file).expect("source");
        // Unit tests may build errors from text.
        let code = without_unit_tests(&text);
        for (number, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if let Some(why) = text_classification(line) {
                found.push(format!("{}:{}: {why}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "\n{}", found.join("\n"));
}

#[test]
fn the_scan_sees_what_it_forbids() {
    assert!(
        text_classification(r#"e.meta().message().is_some_and(|m| m.contains("ConditionalCheckFailed"))"#).is_some()
    );
    assert!(text_classification(r#"if error.to_string().contains("throttl") {"#).is_some());
    assert!(text_classification(r#"Some("ResourceNotFoundException") => ErrorKind::Fatal,"#).is_some());
    assert!(text_classification("Err(error) if error.kind() == ErrorKind::ConditionFailed => {}").is_none());
    assert!(text_classification(r#"write!(f, "{}", db.message())?;"#).is_none());
}
