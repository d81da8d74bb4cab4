//! `/ui/`: the sign-in and sign-out pages.

use super::*;

#[derive(Template)]
#[template(path = "ui/login.html")]
pub(super) struct Login {
    pub(super) error: Option<String>,
    pub(super) user: Option<String>,
    pub(super) csrf: String,
    /// Whether "Sign in with SSO" is offered (OIDC is set up).
    pub(super) sso: bool,
}

/// The sign-in form, with a CSRF token bound to a nonce cookie of its own.
pub(super) async fn login_page(State(server): State<Server>, headers: HeaderMap) -> Page {
    let (nonce, _) = session::new_cookie().map_err(internal)?;
    let csrf = session::form_csrf(server.exec.store.key(), &nonce);
    let page = Login { error: None, user: None, csrf, sso: server.config.oidc.is_some() };
    Ok(([(header::SET_COOKIE, session::set_form_cookie(&nonce, over_tls(&server, &headers)))], Html(page.render().map_err(internal)?)).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    pub(super) token: String,
    #[serde(default)]
    pub(super) csrf: Option<String>,
}

pub(super) async fn login(State(server): State<Server>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Page {
    let peer = headers.get(PROXY_ADDR).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let form_ok = crate::server::auth::cookie(&headers, session::FORM_COOKIE)
        .is_some_and(|n| server.exec.store.key().verify_hex(&session::form_csrf(server.exec.store.key(), &n), f.csrf.as_deref()));
    if !form_ok {
        return Err(Refusal(StatusCode::FORBIDDEN, "the sign-in form's CSRF token is missing or wrong: open the sign-in page again".into()));
    }
    let token = f.token.trim();
    let Some(person) = crate::server::auth::person_by_token(&server, token) else {
        crate::server::auth::refused_sign_in(&server, peer, "a token that is no one's in the directory (or someone disabled)").await;
        let (nonce, _) = session::new_cookie().map_err(internal)?;
        let csrf = session::form_csrf(server.exec.store.key(), &nonce);
        let page =
            Login { error: Some("That token is no one's in this server's directory of people.".into()), user: None, csrf, sso: server.config.oidc.is_some() };
        return Ok((
            StatusCode::UNAUTHORIZED,
            [(header::SET_COOKIE, session::set_form_cookie(&nonce, over_tls(&server, &headers)))],
            Html(page.render().map_err(internal)?),
        )
            .into_response());
    };
    let hash = server.directory().users.token_hash(&person.login).map(String::from);
    let cookie = crate::server::auth::open_session(&server, &person, hash, &[]).await.map_err(internal)?;
    Ok(([(header::SET_COOKIE, session::set_cookie(&cookie, over_tls(&server, &headers)))], Redirect::to("/ui/")).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: Option<String>,
}

/// Ends the session on the server (the cookie is cleared too).
pub(super) async fn logout(State(server): State<Server>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Page {
    if let Some(s) = session(&server, &headers).await {
        if !s.csrf_ok(server.exec.store.key(), f.csrf.as_deref()) {
            return Err(Refusal(StatusCode::FORBIDDEN, "the form's CSRF token is missing or wrong: reload the page".into()));
        }
        crate::server::auth::sign_out(&server, &s).await.map_err(internal)?;
    }
    Ok(([(header::SET_COOKIE, session::clear_cookie(over_tls(&server, &headers)))], Redirect::to("/ui/login")).into_response())
}

#[derive(Template)]
#[template(path = "ui/message.html")]
pub(super) struct Message {
    pub(super) title: String,
    pub(super) message: String,
    pub(super) user: Option<String>,
    pub(super) csrf: String,
}
