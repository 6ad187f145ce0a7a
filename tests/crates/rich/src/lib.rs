pub fn describe() -> String {
    let mut s = leaf::leaf().to_string();
    #[cfg(feature = "extra")]
    s.push_str(&format!(" + {}", abdep::ab()));
    #[cfg(unix)]
    s.push_str(&format!(" + {}", tgt::tgt()));
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn dev_dep() {
        assert!(devonly::check());
    }
}
