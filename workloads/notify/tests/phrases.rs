//! A site writes its messages in its own words: a phrase file replaces the English ones in
//! the subject, the text and the HTML, and says the language.

#![allow(clippy::unwrap_used, reason = "in tests a panic is the failure report")]

use io360_notify::outbox::{Item, Row, Scope};
use io360_notify::{Letters, Phrases, Signer};

fn letters(phrases: Phrases) -> Letters {
    Letters {
        from: "Commentaires <comments@site.test>".parse().unwrap(),
        public_url: "https://site.test".into(),
        signer: Signer::new(b"0123456789abcdef0123456789abcdef"),
        phrases,
    }
}

fn reply(comment: u64, author: &str) -> Row {
    Row {
        v: 1,
        email: "lecteur@site.test".into(),
        event: format!("c{comment}"),
        queued: 0,
        sending: None,
        attempts: 0,
        item: Item::Reply {
            thread: "/billets/un/".into(),
            comment,
            author: Some(author.into()),
            excerpt: "Très juste & bien dit".into(),
            sub: Scope::Thread,
        },
    }
}

fn formatted(letters: &Letters, rows: &[Row]) -> String {
    let message = letters.build(rows, "<1@site.test>", 1_800_000_000).unwrap();
    String::from_utf8(message.formatted()).unwrap()
}

#[test]
fn a_phrase_file_writes_the_digest_in_the_sites_language() {
    let fr = Phrases::parse(
        r#"{
            "lang": "fr",
            "replySubjectMany": "{n} nouveaux commentaires sur {thread}",
            "replyWrote": "{who} a écrit :",
            "replyRead": "Lire",
            "stop": "Ne plus recevoir ces messages"
        }"#,
    )
    .unwrap();
    let mail = formatted(&letters(fr), &[reply(7, "Anne"), reply(8, "<Bob>")]);
    assert!(mail.contains("Content-Language: fr"), "{mail}");
    assert!(
        mail.contains("Subject: 2 nouveaux commentaires sur /billets/un/"),
        "{mail}"
    );
    let lower = mail.to_lowercase();
    assert!(
        lower.contains("lang=3d\"fr\"") || lower.contains("lang=\"fr\""),
        "{mail}"
    );
    assert!(mail.contains("Ne plus recevoir ces messages"), "{mail}");
    // A name goes into the HTML escaped, inside the site's phrase.
    assert!(mail.contains("&lt;Bob&gt;"), "{mail}");
    assert!(!mail.contains("Stop these emails"), "{mail}");

    let en = formatted(&letters(Phrases::default()), &[reply(7, "Anne")]);
    assert!(en.contains("Content-Language: en"), "{en}");
    assert!(
        en.contains("Subject: A new comment on /billets/un/"),
        "{en}"
    );
    assert!(en.contains("Stop these emails"), "{en}");
}
