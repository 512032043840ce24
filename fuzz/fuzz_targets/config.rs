//! Fuzz target: the configuration loader (json5 text to a validated `Config`) on arbitrary text;
//! it must return Ok or Err, never panic or overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Config files are read with `read_to_string`, so only UTF-8 reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(err) = imsg_bridge::config::from_str(text, None) {
        // Rendering the error is part of loading: the message is what the user sees.
        let _ = err.to_string();
    }
});
