fn main() -> std::process::ExitCode {
    portier::cli::main()
}
