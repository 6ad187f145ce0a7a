pub fn ab() -> &'static str { "ab" }
