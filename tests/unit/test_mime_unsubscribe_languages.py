"""Unsubscribe wording in the 24 official EU languages plus Norwegian, Icelandic, Turkish and
Swiss and Austrian German (issue 13): per language a compliant newsletter footer (the usual
"click here to unsubscribe" sentence or link text) and a non-compliant one whose only link sits
next to wording that is not a way out (subscribe, confirm, log in, a hotel's check-out ...).

The phrases follow what newsletter software ships for each language (e.g. listmonk's i18n
files, the footers of public newsletter templates); the sentences are written for this test.
"""

from __future__ import annotations

import pytest

from gateway.mime.parts import TextPart
from gateway.mime.unsubscribe import find_unsubscribe_link

U = "https://news.example/u/42"
SHOP = "https://shop.example/"


def html(body: str) -> TextPart:
    return TextPart("text/html", f"<html><body><p>Neuigkeiten / news ...</p>{body}</body></html>", "1", False)


# language -> (compliant footer, non-compliant footer)
FOOTERS: dict[str, tuple[str, str]] = {
    "bg": (
        f'<p>Ако не желаете да получавате тези имейли, <a href="{U}">отпишете се тук</a>.</p>',
        f'<p><a href="{SHOP}">Потвърждаване на абонамент</a></p>',
    ),
    "cs": (
        f'<p>Nechcete dostávat tyto e-maily? <a href="{U}">Zrušit odběr</a></p>',
        f'<p><a href="{SHOP}">Potvrdit odběr</a></p>',
    ),
    "da": (
        f'<p>Ønsker du ikke at modtage flere e-mails, kan du <a href="{U}">afmelde dig her</a>.</p>',
        f'<p><a href="{SHOP}">Bekræft abonnement</a></p>',
    ),
    "de": (
        f'<p>Wenn Sie den Newsletter nicht mehr erhalten möchten, <a href="{U}">klicken Sie hier</a>.</p>',
        f'<p><a href="{SHOP}">Abonnement bestätigen</a></p>',
    ),
    "de-AT": (
        f'<p>Vom Newsletter <a href="{U}">abmelden</a></p>',
        f'<p>Jetzt zum Newsletter <a href="{SHOP}">anmelden</a> und Gutschein sichern!</p>',
    ),
    "de-CH": (
        f'<p>Keine E-Mails mehr? <a href="{U}">Abo künden</a></p>',
        f'<p><a href="{SHOP}">Abo jetzt lösen</a> und profitieren</p>',
    ),
    "el": (
        f'<p>Αν δεν θέλετε να λαμβάνετε αυτά τα email, <a href="{U}">κάντε κλικ εδώ</a>.</p>',
        f'<p><a href="{SHOP}">Επιβεβαίωση συνδρομής</a></p>',
    ),
    "el-link": (
        f'<p><a href="{U}">ΚΑΤΆΡΓΗΣΗ ΕΓΓΡΑΦΉΣ</a></p>',
        f'<p><a href="{SHOP}">Εγγραφή στο newsletter</a></p>',
    ),
    "en": (
        f'<p>If you no longer wish to receive these emails, <a href="{U}">click here</a>.</p>',
        f'<p>Want more? <a href="{SHOP}">Subscribe to our newsletter</a></p>',
    ),
    "en-prefs": (
        f'<p><a href="{U}">Manage your preferences</a></p>',
        f'<p><a href="{SHOP}">Manage your order</a></p>',
    ),
    "es": (
        f'<p>Si no deseas recibir más correos, puedes <a href="{U}">darte de baja aquí</a>.</p>',
        f'<p><a href="{SHOP}">Confirmar la suscripción</a></p>',
    ),
    "et": (
        f'<p>Kui te ei soovi enam uudiskirja saada, <a href="{U}">loobu tellimusest</a>.</p>',
        f'<p><a href="{SHOP}">Telli uudiskiri</a></p>',
    ),
    "fi": (
        f'<p>Etkö halua enää viestejä? <a href="{U}">Poistu postituslistalta</a></p>',
        f'<p><a href="{SHOP}">Vahvista postituslistalle liittyminen</a></p>',
    ),
    "fr": (
        f'<p>Pour vous désinscrire, <a href="{U}">cliquez ici</a>.</p>',
        f'<p><a href="{SHOP}">Confirmer votre abonnement</a></p>',
    ),
    "ga": (
        f'<p>Mura mian leat na ríomhphoist seo a fháil, <a href="{U}">díliostáil anseo</a>.</p>',
        f'<p><a href="{SHOP}">Liostáil anseo</a></p>',
    ),
    "hr": (
        f'<p>Ako ne želite više primati naše poruke, <a href="{U}">kliknite ovdje</a>.</p>',
        f'<p>Prijava i odjava u hotelu: <a href="{SHOP}">više informacija</a></p>',
    ),
    "hu": (
        f'<p>Ha nem szeretne több levelet kapni, <a href="{U}">itt leiratkozhat</a>.</p>',
        f'<p><a href="{SHOP}">Feliratkozás megerősítése</a></p>',
    ),
    "is": (
        f'<p>Ef þú vilt ekki fá fleiri pósta getur þú <a href="{U}">afskráð þig hér</a>.</p>',
        f'<p><a href="{SHOP}">Skráðu þig á póstlistann</a></p>',
    ),
    "it": (
        f'<p><a href="{U}">Annulla l\'iscrizione</a></p>',
        f'<p><a href="{SHOP}">Conferma l\'iscrizione</a></p>',
    ),
    "lt": (
        f'<p>Jei nebenorite gauti mūsų laiškų, galite <a href="{U}">atsisakyti prenumeratos</a>.</p>',
        f'<p><a href="{SHOP}">Užsiprenumeruokite naujienlaiškį</a></p>',
    ),
    "lv": (
        f'<p>Ja nevēlaties saņemt šos e-pastus, <a href="{U}">atteikties no abonēšanas</a>.</p>',
        f'<p><a href="{SHOP}">Abonēt jaunumus</a></p>',
    ),
    "mt": (
        f'<p>Jekk ma tridx tirċievi aktar emails, <a href="{U}">ikkanċella l-abbonament</a>.</p>',
        f'<p><a href="{SHOP}">Ikkonferma l-abbonament</a></p>',
    ),
    "nl": (
        f'<p>Wil je deze e-mails niet meer? <a href="{U}">Klik hier om je af te melden</a>.</p>',
        f'<p><a href="{SHOP}">Bevestig inschrijving</a></p>',
    ),
    "no": (
        f'<p>Ønsker du ikke å motta flere e-poster? <a href="{U}">Meld deg av her</a>.</p>',
        f'<p><a href="{SHOP}">Bekreft abonnement</a></p>',
    ),
    "pl": (
        f'<p>Aby zrezygnować z subskrypcji, <a href="{U}">kliknij tutaj</a>.</p>',
        f'<p><a href="{SHOP}">Potwierdź subskrypcję</a></p>',
    ),
    "pt": (
        f'<p>Se não quiser receber mais e-mails, <a href="{U}">cancele a subscrição aqui</a>.</p>',
        f'<p><a href="{SHOP}">Confirmar subscrição</a></p>',
    ),
    "ro": (
        f'<p>Dacă nu mai doriți să primiți aceste e-mailuri, <a href="{U}">vă puteți dezabona</a>.</p>',
        f'<p><a href="{SHOP}">Confirmați abonamentul</a></p>',
    ),
    "ro-cedilla": (f'<p><a href="{U}">Dezabonaţi-vă</a></p>', f'<p><a href="{SHOP}">Abonaţi-vă</a></p>'),
    "sk": (
        f'<p>Nechcete dostávať tieto e-maily? <a href="{U}">Zrušiť odber</a></p>',
        f'<p><a href="{SHOP}">Potvrdiť odber</a></p>',
    ),
    "sl": (
        f'<p>Za odjavo od e-novic <a href="{U}">kliknite tukaj</a>.</p>',
        f'<p><a href="{SHOP}">Odjava</a> iz spletne trgovine</p>',
    ),
    "sv": (
        f'<p>Vill du inte längre ta emot våra utskick? <a href="{U}">Avsluta prenumerationen här</a>.</p>',
        f'<p><a href="{SHOP}">Bekräfta prenumeration</a></p>',
    ),
    "tr": (
        f'<p>Bu e-postaları almak istemiyorsanız <a href="{U}">abonelikten çıkın</a>.</p>',
        f'<p><a href="{SHOP}">Üyeliği onaylayınız</a></p>',
    ),
    "tr-caps": (f'<p><a href="{U}">ABONELİKTEN ÇIK</a></p>', f'<p><a href="{SHOP}">ABONE OL</a></p>'),
}


def test_every_language_is_covered() -> None:
    eu = {
        "bg",
        "cs",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "fi",
        "fr",
        "ga",
        "hr",
        "hu",
        "it",
        "lt",
        "lv",
        "mt",
        "nl",
        "pl",
        "pt",
        "ro",
        "sk",
        "sl",
        "sv",
    }
    assert len(eu) == 24
    assert eu | {"no", "is", "tr", "de-AT", "de-CH"} <= FOOTERS.keys()


@pytest.mark.parametrize("lang", sorted(FOOTERS))
def test_compliant_footer_is_found(lang: str) -> None:
    assert find_unsubscribe_link(html(FOOTERS[lang][0])) == U


@pytest.mark.parametrize("lang", sorted(FOOTERS))
def test_non_compliant_footer_is_refused(lang: str) -> None:
    assert find_unsubscribe_link(html(FOOTERS[lang][1])) is None


@pytest.mark.parametrize("lang", sorted(FOOTERS))
def test_compliant_footer_as_plain_text(lang: str) -> None:
    """The same wording in a text/plain part: the URL within two lines of the phrase."""
    body = FOOTERS[lang][0]
    text = body.replace(f'<a href="{U}">', "").replace("</a>", f"\n{U}")
    text = text.replace("<p>", "").replace("</p>", "")
    assert find_unsubscribe_link(TextPart("text/plain", text, "1", False)) == U


def test_an_unsubscribe_link_beats_the_preference_centre() -> None:
    markup = (
        f'<p><a href="https://news.example/prefs">update your preferences</a> or '
        f'<a href="{U}">unsubscribe from this list</a></p>'
    )
    assert find_unsubscribe_link(html(markup)) == U
    text = f"Manage your preferences: https://news.example/prefs\n\nTo stop receiving these mails: {U}"
    assert find_unsubscribe_link(TextPart("text/plain", text, "1", False)) == U
