//! Generates the C header, include/switchyard.h, from the `extern "C"` items in src/ffi.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(&dir).join("cbindgen.toml"))
        .expect("cbindgen.toml is readable");
    match cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
    {
        // Writes only when the text changed, so the header's mtime is stable.
        Ok(bindings) => {
            bindings.write_to_file(Path::new(&dir).join("include/switchyard.h"));
        }
        Err(e) => panic!("cbindgen could not generate include/switchyard.h: {e}"),
    }
}
