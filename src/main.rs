//! The `geogate` command: thin, everything lives in the library.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("geogate: not yet");
    std::process::exit(2);
}
