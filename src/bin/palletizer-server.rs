//! `palletizer-server CONFIG.toml [-q|-v]`: the registry server.
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut config = None;
    let mut verbosity = 1u8;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "-q" | "--quiet" => verbosity = 0,
            "-v" | "--verbose" => verbosity = 2,
            "-h" | "--help" => {
                println!("usage: palletizer-server CONFIG.toml [-q|-v]");
                return ExitCode::SUCCESS;
            }
            _ if config.is_none() && !arg.starts_with('-') => config = Some(arg),
            _ => {
                eprintln!("error: unexpected argument `{arg}`\nusage: palletizer-server CONFIG.toml [-q|-v]");
                return ExitCode::FAILURE;
            }
        }
    }
    let Some(config) = config else {
        eprintln!("error: no config file given\nusage: palletizer-server CONFIG.toml [-q|-v]");
        return ExitCode::FAILURE;
    };
    palletizer::log::set_verbosity(verbosity);
    match palletizer::server::serve_config_file(std::path::Path::new(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
