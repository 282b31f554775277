"""Words on the lookup's pages (form, marksheet, no-match and notices), in English and Hindi.

The gateway forwards the query string and names the student's language in
``x-waitroom-lang`` (from ``?lang``, its ``wr_lang`` cookie or Accept-Language);
cookies never reach the backend. The backend reached directly has only the query
and Accept-Language. Every key exists in every language (tests/lookup/test_lookup_pages.py).
Names, schools and subjects are shown as the board uploaded them; only labels change.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from waitroom.shared.languages import DEFAULT_LANGUAGE, LANGUAGES, from_accept_language

__all__ = ["DEFAULT", "LANGUAGES", "WORDS", "other", "pick_language"]

DEFAULT = DEFAULT_LANGUAGE

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "site_title": "Exam results",
        "form_heading": "See your result",
        "check_details": "Check your details",
        "roll": "Roll number",
        "roll_hint": "As printed on your admit card, digits only",
        "dob": "Date of birth",
        "dob_hint": "As on your admit card",
        "submit": "Show my result",
        "privacy": "Your roll number and date of birth are used only to find your marksheet.",
        "correct_fields": "Please correct the marked fields.",
        "no_match": "No result matches this roll number and date of birth. "
        "Check both against your admit card and try again.",
        "attempt_used": "That attempt used one of your lookups.",
        "lookups_left_one": "You have 1 lookup left",
        "lookups_left_many": "You have {n} lookups left",
        "lookups_none": "You have no lookups left on this turn. To look up more, join "
        "the line again: it will not take long.",
        "until": "{left}, until {time}.",
        "left_only": "{left}.",
        "turn_until": "Your turn lasts until {time}.",
        "join_again": "Join the line again",
        "roll_empty": "Enter your roll number.",
        "roll_long": "A roll number has at most 12 digits. Check your admit card.",
        "roll_digits": "A roll number contains digits only, as on your admit card.",
        "dob_empty": "Enter your date of birth.",
        "dob_unreal": "{text} is not a real date. Check the day and month.",
        "dob_format": "Write your date of birth as YYYY-MM-DD, for example 2008-04-15.",
        "dob_format_lenient": "Write your date of birth as YYYY-MM-DD or DD-MM-YYYY, "
        "for example 2008-04-15.",
        "api_roll_type": 'Give "roll" as a string of digits, e.g. "21000001".',
        "api_dob_type": 'Give "dob" as a string "YYYY-MM-DD", e.g. "2008-04-15".',
        "form_unreadable": "The form could not be read. Please fill it in again.",
        "form_type": "Send the form from this page (as application/x-www-form-urlencoded).",
        "title_too_large": "Request too large",
        "too_large": "The form sent was too large to be a result lookup.",
        "candidate": "Candidate",
        "mother": "Mother's name",
        "father": "Father's name",
        "school": "School",
        "marks_caption": "Marks: theory, practical or internal assessment, total out of 100",
        "code": "Code",
        "subject": "Subject",
        "theory": "Theory",
        "practical": "Practical",
        "total": "Total",
        "grade": "Grade",
        "absent": "AB",
        "result": "Result",
        "official": "This online result is for immediate information. The marksheet "
        "issued by the board is the official record.",
        "another": "Look up another result",
        "print": "Print this page",
        "result_PASS": "PASS",
        "result_COMPARTMENT": "COMPARTMENT",
        "result_ESSENTIAL REPEAT": "ESSENTIAL REPEAT",
        "result_ABSENT": "ABSENT",
        "result_RESULT WITHHELD": "RESULT WITHHELD",
        "result_RESULT LATER": "RESULT LATER",
        "title_not_found": "Page not found",
        "not_found": "There is no page at this address.",
        "title_not_allowed": "Method not allowed",
        "not_allowed": "{path} accepts {methods} only.",
        "or": " or ",
        "title_not_admitted": "Please use the waiting room",
        "not_admitted": "Please go through the waiting room: open the results page from the "
        "board's website to get your place in line. You will be brought here when it is "
        "your turn.",
        "expired": "Your turn to look up a result has timed out. Please go back to the "
        "waiting room page: it will bring you here again.",
        "title_unavailable": "Please try again shortly",
        "unavailable": "Results are briefly unavailable. Please try again in a few seconds.",
        "back_to_form": "Back to the result form",
        # The same words as the waiting page's switch (waitroom/gateway/i18n.py), in the
        # language it switches to.
        "language": "भाषा: हिन्दी",
    },
    "hi": {
        "site_title": "परीक्षा परिणाम",
        "form_heading": "अपना परिणाम देखें",
        "check_details": "अपना विवरण जाँचें",
        "roll": "अनुक्रमांक (रोल नंबर)",
        "roll_hint": "जैसा आपके प्रवेश पत्र पर छपा है, केवल अंक",
        "dob": "जन्म तिथि",
        "dob_hint": "जैसी आपके प्रवेश पत्र पर है",
        "submit": "मेरा परिणाम दिखाएँ",
        "privacy": "आपका अनुक्रमांक और जन्म तिथि केवल आपकी अंकतालिका ढूँढने के लिए इस्तेमाल होते हैं।",
        "correct_fields": "कृपया चिह्नित जानकारी ठीक करें।",
        "no_match": "इस अनुक्रमांक और जन्म तिथि से कोई परिणाम नहीं मिला। दोनों को अपने "
        "प्रवेश पत्र से मिलाकर फिर से कोशिश करें।",
        "attempt_used": "इस कोशिश में आपकी एक खोज इस्तेमाल हुई।",
        "lookups_left_one": "आपके पास 1 खोज बाकी है",
        "lookups_left_many": "आपके पास {n} खोजें बाकी हैं",
        "lookups_none": "इस बारी में आपकी कोई खोज बाकी नहीं है। और खोजने के लिए फिर से "
        "कतार में लगें: ज़्यादा देर नहीं लगेगी।",
        "until": "{left}, {time} तक।",
        "left_only": "{left}।",
        "turn_until": "आपकी बारी {time} तक है।",
        "join_again": "फिर से कतार में लगें",
        "roll_empty": "अपना अनुक्रमांक लिखें।",
        "roll_long": "अनुक्रमांक में अधिकतम 12 अंक होते हैं। अपना प्रवेश पत्र देखें।",
        "roll_digits": "अनुक्रमांक में केवल अंक होते हैं, जैसे आपके प्रवेश पत्र पर।",
        "dob_empty": "अपनी जन्म तिथि लिखें।",
        "dob_unreal": "{text} कोई असली तारीख नहीं है। दिन और महीना जाँचें।",
        "dob_format": "अपनी जन्म तिथि YYYY-MM-DD के रूप में लिखें, जैसे 2008-04-15।",
        "dob_format_lenient": "अपनी जन्म तिथि YYYY-MM-DD या DD-MM-YYYY के रूप में लिखें, जैसे 2008-04-15।",
        "api_roll_type": '"roll" अंकों की स्ट्रिंग के रूप में दें, जैसे "21000001"।',
        "api_dob_type": '"dob" स्ट्रिंग "YYYY-MM-DD" के रूप में दें, जैसे "2008-04-15"।',
        "form_unreadable": "फ़ॉर्म पढ़ा नहीं जा सका। कृपया इसे फिर से भरें।",
        "form_type": "फ़ॉर्म इसी पेज से भेजें (application/x-www-form-urlencoded के रूप में)।",
        "title_too_large": "अनुरोध बहुत बड़ा है",
        "too_large": "भेजा गया फ़ॉर्म परिणाम खोजने के लिए बहुत बड़ा था।",
        "candidate": "परीक्षार्थी",
        "mother": "माता का नाम",
        "father": "पिता का नाम",
        "school": "विद्यालय",
        "marks_caption": "अंक: सैद्धांतिक, प्रायोगिक या आंतरिक मूल्यांकन, कुल 100 में से",
        "code": "कोड",
        "subject": "विषय",
        "theory": "सैद्धांतिक",
        "practical": "प्रायोगिक",
        "total": "कुल",
        "grade": "ग्रेड",
        "absent": "अनुपस्थित",
        "result": "परिणाम",
        "official": "यह ऑनलाइन परिणाम तुरंत जानकारी के लिए है। बोर्ड द्वारा जारी "
        "अंकतालिका ही आधिकारिक रिकॉर्ड है।",
        "another": "दूसरा परिणाम देखें",
        "print": "यह पेज प्रिंट करें",
        "result_PASS": "उत्तीर्ण",
        "result_COMPARTMENT": "कम्पार्टमेंट",
        "result_ESSENTIAL REPEAT": "आवश्यक पुनरावृत्ति",
        "result_ABSENT": "अनुपस्थित",
        "result_RESULT WITHHELD": "परिणाम रोका गया",
        "result_RESULT LATER": "परिणाम बाद में",
        "title_not_found": "पेज नहीं मिला",
        "not_found": "इस पते पर कोई पेज नहीं है।",
        "title_not_allowed": "यह तरीका स्वीकार नहीं है",
        "not_allowed": "{path} केवल {methods} स्वीकार करता है।",
        "or": " या ",
        "title_not_admitted": "कृपया प्रतीक्षा कक्ष से आएँ",
        "not_admitted": "कृपया प्रतीक्षा कक्ष से होकर आएँ: कतार में स्थान पाने के लिए बोर्ड "
        "की वेबसाइट से परिणाम पेज खोलें। आपकी बारी आने पर आपको यहाँ लाया जाएगा।",
        "expired": "परिणाम देखने की आपकी बारी का समय समाप्त हो गया। कृपया प्रतीक्षा कक्ष के "
        "पेज पर वापस जाएँ: वह आपको फिर यहाँ ले आएगा।",
        "title_unavailable": "कृपया थोड़ी देर में फिर कोशिश करें",
        "unavailable": "परिणाम कुछ पल के लिए उपलब्ध नहीं हैं। कृपया कुछ सेकंड में फिर कोशिश करें।",
        "back_to_form": "परिणाम फ़ॉर्म पर वापस जाएँ",
        "language": "Language: English",
    },
}


def other(lang: str) -> str:
    """The language the footer's switch offers."""
    return next(code for code in LANGUAGES if code != lang)


def pick_language(query_string: bytes, header: bytes | None, accept: bytes | None) -> str:
    """``?lang=`` first (the switch the student just clicked), then the gateway's
    ``x-waitroom-lang`` (the student's remembered choice), then Accept-Language."""
    if b"lang=" in query_string:
        for name, value in parse_qsl(query_string.decode("latin-1")):
            if name == "lang" and value in LANGUAGES:
                return value
    if header is not None:
        chosen = header.decode("latin-1").strip().lower()
        if chosen in LANGUAGES:
            return chosen
    accepted = from_accept_language(accept.decode("latin-1")) if accept else None
    return accepted or DEFAULT
