pub fn leaf() -> &'static str {
    concat!("leaf ", env!("CARGO_PKG_VERSION"))
}
