pub fn check() -> bool { true }
