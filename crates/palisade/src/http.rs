//! HTTP helpers: [`key`](crate::http::key) extractors for keyed policies, and the rejection [`response`](crate::http::response)
//! layer that answers rejections as 429/503/504 (or gRPC statuses).

pub use palisade_core::response::{self, RejectionResponse, RejectionResponseLayer};

pub mod key {
    //! Request keys for keyed rate limits, keyed concurrency limits and per-key breakers:
    //! each function returns the `Fn(&http::Request<B>) -> K` those layers take.
    //!
    //! A request whose key cannot be read gets `None`, one shared key: all such requests
    //! share one limit (so a missing header cannot be used to dodge the limit per
    //! request, and cannot exhaust the keyed store either).
    //!
    //! # Example
    //!
    //! ```
    //! use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    //! use palisade::http::key;
    //!
    //! // Behind one trusted load balancer: the client is the last address it appended.
    //! let client = key::forwarded_for(1);
    //! let mut req = http::Request::new(());
    //! req.headers_mut().insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
    //! req.extensions_mut().insert(SocketAddr::from(([10, 0, 0, 1], 443))); // the balancer
    //! assert_eq!(client(&req), Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
    //! ```

    use std::net::{IpAddr, SocketAddr};

    use ::http::{HeaderName, HeaderValue, Request};

    /// The peer's IP, from the request's extensions: a `SocketAddr` (insert it from your
    /// accept loop, or serve axum with `into_make_service_with_connect_info` and map
    /// `ConnectInfo` into it) or, with feature `tonic-server`, the `TcpConnectInfo` a
    /// `tonic::transport::Server` puts on every request.
    pub fn peer_ip<B>() -> impl Fn(&Request<B>) -> Option<IpAddr> + Clone + Send + Sync + 'static {
        |req: &Request<B>| peer(req)
    }

    fn peer<B>(req: &Request<B>) -> Option<IpAddr> {
        if let Some(addr) = req.extensions().get::<SocketAddr>() {
            return Some(addr.ip());
        }
        #[cfg(feature = "tonic-server")]
        if let Some(info) = req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
        {
            return info.remote_addr().map(|a| a.ip());
        }
        None
    }

    /// The client's IP behind `trusted_hops` proxies you run, from `Forwarded` (RFC 7239,
    /// its `for=` parameters) or else `X-Forwarded-For`.
    ///
    /// Each proxy appends the address it received the request from, so the client is the
    /// `trusted_hops`-th address from the right; everything left of it was written by the
    /// client and is never trusted. With `trusted_hops = 0`, or when the header has fewer
    /// addresses than trusted hops (a request that bypassed a proxy), the peer's IP
    /// ([`peer_ip`]) is the key.
    pub fn forwarded_for<B>(
        trusted_hops: usize,
    ) -> impl Fn(&Request<B>) -> Option<IpAddr> + Clone + Send + Sync + 'static {
        move |req: &Request<B>| {
            if trusted_hops == 0 {
                return peer(req);
            }
            let headers = req.headers();
            // `Forwarded` (RFC 7239) when the request has it, else `X-Forwarded-For`.
            let found = if headers.contains_key(::http::header::FORWARDED) {
                nth_from_right(forwarded_addrs(headers), trusted_hops)
            } else {
                nth_from_right(xff_addrs(headers), trusted_hops)
            };
            found.or_else(|| peer(req))
        }
    }

    /// The `n`th address from the right (1 = the last one), if there are that many and it
    /// parses.
    fn nth_from_right(addrs: Vec<&str>, n: usize) -> Option<IpAddr> {
        let i = addrs.len().checked_sub(n)?;
        parse_ip(addrs[i])
    }

    fn xff_addrs(headers: &::http::HeaderMap) -> Vec<&str> {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect()
    }

    fn forwarded_addrs(headers: &::http::HeaderMap) -> Vec<&str> {
        headers
            .get_all(::http::header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for")
                        .then(|| v.trim().trim_matches('"'))
                })
            })
            .collect()
    }

    /// An IP from `1.2.3.4`, `1.2.3.4:80`, `[::1]:80` or `::1`; `None` for obfuscated
    /// identifiers (`_hidden`, `unknown`).
    fn parse_ip(s: &str) -> Option<IpAddr> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(ip);
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Some(addr.ip());
        }
        s.strip_prefix('[')
            .and_then(|r| r.split(']').next())
            .and_then(|ip| ip.parse().ok())
    }

    /// The value of header `name` (the first one, if repeated).
    pub fn header<B>(
        name: HeaderName,
    ) -> impl Fn(&Request<B>) -> Option<HeaderValue> + Clone + Send + Sync + 'static {
        move |req: &Request<B>| req.headers().get(&name).cloned()
    }

    /// A key from the request's path, by `f` (e.g. the tenant in `/t/{tenant}/…`).
    ///
    /// ```
    /// let tenant = palisade::http::key::path(|path| {
    ///     path.strip_prefix("/t/")?.split('/').next().map(str::to_owned)
    /// });
    /// let req = http::Request::get("/t/acme/orders").body(()).unwrap();
    /// assert_eq!(tenant(&req).as_deref(), Some("acme"));
    /// ```
    pub fn path<B, K, F>(f: F) -> impl Fn(&Request<B>) -> Option<K> + Clone + Send + Sync + 'static
    where
        F: Fn(&str) -> Option<K> + Clone + Send + Sync + 'static,
    {
        move |req: &Request<B>| f(req.uri().path())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn req(headers: &[(&str, &str)], peer: Option<[u8; 4]>) -> Request<()> {
            let mut r = Request::new(());
            for (k, v) in headers {
                r.headers_mut().append(
                    HeaderName::try_from(*k).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            if let Some(p) = peer {
                r.extensions_mut().insert(SocketAddr::from((p, 1234)));
            }
            r
        }

        fn ip(s: &str) -> Option<IpAddr> {
            Some(s.parse().unwrap())
        }

        #[test]
        fn forwarded_for_counts_trusted_hops_from_the_right() {
            let xff = [("x-forwarded-for", "1.1.1.1, 2.2.2.2, 3.3.3.3")];
            let r = req(&xff, Some([9, 9, 9, 9]));
            assert_eq!(forwarded_for(1)(&r), ip("3.3.3.3"));
            assert_eq!(forwarded_for(2)(&r), ip("2.2.2.2"));
            assert_eq!(forwarded_for(3)(&r), ip("1.1.1.1"));
            // More trusted hops than addresses: the request bypassed a proxy; the peer.
            assert_eq!(forwarded_for(4)(&r), ip("9.9.9.9"));
            assert_eq!(forwarded_for(0)(&r), ip("9.9.9.9"));
            // Repeated headers are one list.
            let r = req(
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "2.2.2.2"),
                ],
                None,
            );
            assert_eq!(forwarded_for(1)(&r), ip("2.2.2.2"));
            // Garbage is no key, never a panic.
            let r = req(&[("x-forwarded-for", "not-an-ip, ,,")], None);
            assert_eq!(forwarded_for(1)(&r), None);
        }

        #[test]
        fn forwarded_header_wins_and_parses_ports_and_v6() {
            let r = req(
                &[
                    (
                        "forwarded",
                        r#"for=1.1.1.1;proto=https, for="[2001:db8::1]:4711""#,
                    ),
                    ("x-forwarded-for", "7.7.7.7"),
                ],
                None,
            );
            assert_eq!(forwarded_for(1)(&r), ip("2001:db8::1"));
            assert_eq!(forwarded_for(2)(&r), ip("1.1.1.1"));
            let r = req(&[("forwarded", "for=_hidden")], Some([9, 9, 9, 9]));
            assert_eq!(forwarded_for(1)(&r), ip("9.9.9.9"));
        }

        #[test]
        fn header_and_peer() {
            let r = req(&[("x-tenant", "acme")], Some([10, 0, 0, 1]));
            assert_eq!(
                header(HeaderName::from_static("x-tenant"))(&r).unwrap(),
                "acme"
            );
            assert_eq!(header(HeaderName::from_static("x-other"))(&r), None);
            assert_eq!(peer_ip()(&r), ip("10.0.0.1"));
        }
    }
}
