pub fn tgt() -> &'static str { "tgt" }
