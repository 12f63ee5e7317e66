//! URLs as they may be shown: in logs, `check` output and error texts. Credentials travel in
//! URLs more often than they should (a DingTalk robot's `access_token`, `user:password@`), and
//! an HTTP client's error names the URL it failed on; so every URL is redacted before it is
//! printed: userinfo and every query value become `***`, the scheme, host, port and path stay
//! (they are what an operator needs to tell which destination failed).

/// `https://oapi.dingtalk.com/robot/send?access_token=***`, `mqtt://***@broker:1883`. Text that
/// is not a URL is reduced to its scheme and host part before the first `/`, `?` or `@`.
pub fn url(u: &str) -> String {
    match reqwest::Url::parse(u) {
        // Nothing to hide: shown as written.
        Ok(parsed)
            if parsed.username().is_empty()
                && parsed.password().is_none()
                && parsed.query().is_none()
                && parsed.fragment().is_none() =>
        {
            u.to_string()
        }
        Ok(mut parsed) if parsed.has_host() => {
            let had_user = !parsed.username().is_empty() || parsed.password().is_some();
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            let pairs: Vec<String> = parsed
                .query_pairs()
                .map(|(k, _)| format!("{k}=***"))
                .collect();
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut s = parsed.to_string();
            if had_user && let Some(i) = s.find("://") {
                s.insert_str(i + 3, "***@");
            }
            if !pairs.is_empty() {
                s.push('?');
                s.push_str(&pairs.join("&"));
            }
            s
        }
        _ => {
            // Not parseable (or no host): keep what cannot be a secret.
            let cut = u.find(['?', '@', '#']).unwrap_or(u.len());
            let head = &u[..cut];
            if cut < u.len() {
                format!("{head}***")
            } else {
                head.to_string()
            }
        }
    }
}

/// Whether a URL carries userinfo (`user:password@`): refused in the config, where credentials
/// come from the environment or files.
pub fn has_userinfo(u: &str) -> bool {
    match reqwest::Url::parse(u) {
        Ok(p) => !p.username().is_empty() || p.password().is_some(),
        // mqtt:// is parsed by hand; look for an @ before the path.
        Err(_) => u
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
            .unwrap_or(false),
    }
}

/// An HTTP client's error without the URL it names (reqwest puts the whole URL, query and
/// all, in its message), with its causes.
pub fn http_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_urls_are_never_shown() {
        assert_eq!(
            url("https://oapi.dingtalk.com/robot/send?access_token=abc123&x=1"),
            "https://oapi.dingtalk.com/robot/send?access_token=***&x=***"
        );
        assert_eq!(
            url("http://admin:s3cret@127.0.0.1:8086/"),
            "http://***@127.0.0.1:8086/"
        );
        assert_eq!(url("mqtt://u:p@broker:1883"), "mqtt://***@broker:1883");
        assert_eq!(url("http://127.0.0.1:8086"), "http://127.0.0.1:8086");
        assert_eq!(url("not a url?token=x"), "not a url***");
        for u in [
            "https://oapi.dingtalk.com/robot/send?access_token=abc123",
            "http://admin:s3cret@127.0.0.1:8086/",
            "mqtt://u:p@broker:1883",
        ] {
            let r = url(u);
            for secret in ["abc123", "s3cret", "u:p"] {
                assert!(!r.contains(secret), "{r}");
            }
        }
        assert!(has_userinfo("http://a:b@h/") && has_userinfo("mqtt://a@h:1883"));
        assert!(!has_userinfo("http://h:8086") && !has_userinfo("mqtt://h:1883"));
    }

    #[tokio::test]
    async fn an_http_error_does_not_name_the_url() {
        // A closed port on loopback: connection refused, an error that names its URL.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let u = format!("http://127.0.0.1:{port}/robot/send?access_token=TOPSECRET");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let e = reqwest::Client::new()
            .post(&u)
            .send()
            .await
            .expect_err("nothing listens there");
        assert!(
            e.to_string().contains("TOPSECRET"),
            "reqwest names the URL: {e}"
        );
        let shown = http_error(e);
        assert!(!shown.contains("TOPSECRET"), "{shown}");
        assert!(!shown.is_empty());
    }
}
