//! The URLs hookflash posts to (webhooks, OzML `FinishedUrl`): plain `http://` with a host.
//! hookflash speaks no TLS itself; a receiver elsewhere is reached through a local proxy.

pub use reqwest::Url;

/// `text` as a URL hookflash can post to, or why not.
pub fn parse(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err("https is not supported; post to a local http:// proxy instead".into());
        }
        other => return Err(format!("scheme `{other}` is not http")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn only_http_urls_with_a_host_pass() {
        assert!(parse("http://127.0.0.1:9000/hook").is_ok());
        assert!(parse("https://example.com/").unwrap_err().contains("https"));
        assert!(parse("ftp://x/").unwrap_err().contains("ftp"));
        assert!(parse("not a url").unwrap_err().contains("not a URL"));
    }
}
