//! The progress bar of long commands, on standard error (indicatif hides it when that
//! is not a terminal).

/// A bar of `length` steps drawn with `template` (indicatif's), or a hidden one.
pub fn bar(show: bool, length: u64, template: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
