//! For a `tch` build: compiles the ATen operators tch does not bind (`csrc/aten_ops.cpp`)
//! against the libtorch that torch-sys links, and records that libtorch's version for
//! `ndhtl --version` and agent registration (the torch wheel's `version.py` sits in its
//! folder).

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=csrc/aten_ops.cpp");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let Some(libtorch) = libtorch_folder() else {
        panic!(
            "the `tch` feature needs a libtorch: set LIBTORCH (or LIBTORCH_USE_PYTORCH=1 with torch \
             importable); `eval \"$(deploy/libtorch.sh)\"` does it"
        );
    };
    record_version(&libtorch);
    #[cfg(feature = "tch")]
    compile_aten_ops(&libtorch);
}

/// The libtorch folder torch-sys builds against: `LIBTORCH`, or the torch package of the
/// Python that `LIBTORCH_USE_PYTORCH` points torch-sys at.
fn libtorch_folder() -> Option<PathBuf> {
    if let Some(folder) = std::env::var_os("LIBTORCH") {
        return Some(PathBuf::from(folder));
    }
    std::env::var_os("LIBTORCH_USE_PYTORCH")?;
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import os, torch; print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

// `cc` is a build dependency of the tch feature only.
#[cfg(feature = "tch")]
fn compile_aten_ops(libtorch: &Path) {
    let source = Path::new("csrc/aten_ops.cpp");
    if !source.exists() {
        // cargo-chef's dependency-only build of the images (deploy/docker) has a skeleton of
        // this crate without its sources; the real build that follows has the file.
        println!("cargo:warning=csrc/aten_ops.cpp is missing: not compiling the ATen operators");
        return;
    }
    // torch-sys's default; the PyPI wheels since torch 2.7 use the C++11 ABI.
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file(source)
        .include(libtorch.join("include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={cxx11_abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("ndhtl_aten_ops");
    // After the archive, so that the linker resolves its ATen symbols.
    println!(
        "cargo:rustc-link-search=native={}",
        libtorch.join("lib").display()
    );
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

fn record_version(libtorch: &Path) {
    let version_file = libtorch.join("version.py");
    println!("cargo:rerun-if-changed={}", version_file.display());
    let Ok(text) = std::fs::read_to_string(&version_file) else {
        return;
    };
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            // `cuda: Optional[str] = '12.8'`: the name is before any annotation.
            let key = key.split(':').next().unwrap_or_default();
            (key.trim() == name).then(|| value.trim().trim_matches(['\'', '"']).to_string())
        })
    };
    if let Some(version) = field("__version__") {
        println!("cargo:rustc-env=NDHTL_LIBTORCH_VERSION={version}");
    }
    if let Some(cuda) = field("cuda").filter(|cuda| cuda != "None") {
        println!("cargo:rustc-env=NDHTL_LIBTORCH_CUDA={cuda}");
    }
}
