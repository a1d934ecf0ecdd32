//! `portier hash-password`: a bcrypt hash for `basic_auth.users`, from standard input.

use super::fail;
use std::process::ExitCode;

pub(super) fn hash_password(cost: u32) -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        return fail(format!("cannot read the password on standard input: {e}"));
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return fail("empty password (write it on standard input, e.g. `echo -n 's3cret' | portier hash-password`)");
    }
    match bcrypt::hash(password, cost) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot hash: {e}")),
    }
}
