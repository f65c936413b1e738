//! Records which libtorch a `tch` build links against, for `ndhtl --version` and agent
//! registration: the torch wheel's `version.py` sits in the `LIBTORCH` folder.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let version_file = std::path::Path::new(&libtorch).join("version.py");
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
