// accel's fleet page: sends the token the operator entered as X-Auth-Token on every
// request htmx makes, marks the periodic refresh as a request for the content alone,
// skips a refresh whose content did not change, and shows what the api refused.
// Loaded as a file: the page's Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var KEY = "accel-ui-token";

  function token() {
    return window.sessionStorage.getItem(KEY);
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function showProblem(text) {
    var problem = byId("problem");
    if (problem) {
      problem.textContent = text;
      problem.hidden = !text;
    }
  }

  function askForToken(text) {
    window.sessionStorage.removeItem(KEY);
    var form = byId("token-form");
    if (form) {
      form.hidden = false;
    }
    var out = byId("sign-out");
    if (out) {
      out.hidden = true;
    }
    showProblem(text);
  }

  // The whole page again, this time with the token (the frame came without data).
  function loadWithToken() {
    window.htmx.ajax("GET", document.body.dataset.here, { target: "body", swap: "innerHTML" });
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var stored = token();
    if (stored) {
      event.detail.headers["X-Auth-Token"] = stored;
    }
    if (event.detail.elt && event.detail.elt.id === "content") {
      event.detail.headers["Accel-UI-Part"] = "content";
    }
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (target && target.id === "content" && event.detail.xhr.status === 200) {
      // The browser revalidates with the ETag: an unchanged answer is the same text.
      if (target.dataset.shown === event.detail.serverResponse) {
        event.detail.shouldSwap = false;
      }
      target.dataset.shown = event.detail.serverResponse;
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr || event.detail.failed === false) {
      if (document.body.dataset.signedIn === "yes") {
        showProblem("");
      }
      return;
    }
    if (xhr.status === 0) {
      showProblem("The api does not answer; retrying.");
      return;
    }
    var message = xhr.statusText;
    try {
      var body = JSON.parse(xhr.responseText);
      // Cyborg's error body: the fault, itself JSON, in error_message.
      message = JSON.parse(body.error_message).faultstring || message;
    } catch (ignored) {
      // Not JSON: keep the status text.
    }
    if (xhr.status === 401) {
      askForToken("The api refused the token: " + message);
    } else {
      showProblem(xhr.status + ": " + message);
    }
  });

  // The sign-out button shows while a token is kept (a navigation redraws the body).
  function showSignOut() {
    var out = byId("sign-out");
    if (out) {
      out.hidden = !token();
    }
  }

  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.detail.target === document.body) {
      document.body.dataset.signedIn = "yes";
    }
    showSignOut();
  });

  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field.form && field.form.id === "filters") {
      field.form.requestSubmit();
    }
  });

  document.addEventListener("submit", function (event) {
    if (event.target.id !== "token-form") {
      return;
    }
    event.preventDefault();
    var input = byId("token-input");
    if (input && input.value) {
      window.sessionStorage.setItem(KEY, input.value);
      input.value = "";
      loadWithToken();
    }
  });

  document.addEventListener("click", function (event) {
    if (event.target.id === "sign-out") {
      askForToken("Signed out.");
      window.location.reload();
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    if (document.body.dataset.signedIn === "no" && token()) {
      loadWithToken();
    }
    showSignOut();
  });
})();
