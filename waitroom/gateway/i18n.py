"""Words on the student's pages, in English and Hindi.

A student picks a language with ``?lang=hi`` (remembered in a cookie); otherwise
the browser's Accept-Language decides. Every message key exists in every language.
"""

from __future__ import annotations

from waitroom.shared.languages import DEFAULT_LANGUAGE, LANGUAGES, from_accept_language

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title_waiting": "You are in line",
        "lead": "Results are being released to everyone in order. Your page updates by itself.",
        "your_place": "Your place in line",
        "ahead": "People ahead of you",
        "eta": "Estimated wait",
        "eta_minutes": "{low}–{high} min",
        "eta_under_minute": "under a minute",
        "eta_paused": "admission is paused; your place is kept",
        "progress": "Progress",
        "updated": "Last updated",
        "keep_place": "Refreshing or closing this page keeps your place. "
        "Come back in this browser and you will still be in line.",
        "reconnecting": "Reconnecting… your place is safe; the numbers will "
        "update when we are back in touch.",
        "paused": "Admission is paused for a moment. Your place is kept.",
        "ready": "It is your turn. Opening the result page…",
        "continue": "Continue",
        "rejected_garbled": "We could not read your queue ticket, so you have a new "
        "place at the end of the line.",
        "rejected_tampered": "Your queue ticket was not one we issued (it was changed "
        "or copied), so you have a new place at the end of the line.",
        "rejected_foreign": "Your queue ticket was for an earlier line, so you have a "
        "new place at the end of the line.",
        "rejected_expired": "Your queue ticket had expired, so you have a new place "
        "at the end of the line.",
        "rejected_spent": "Your queue ticket was already used to see results, so you "
        "have a new place at the end of the line.",
        "pass_expired": "Your time to view results ran out, so you are back in line. "
        "It will not take long.",
        "title_busy": "The result service is busy",
        "busy": "The result service is busy right now. We are retrying "
        "automatically; you keep your turn and do not need to queue again.",
        "retry_now": "Try again now",
        "title_unavailable": "Please wait",
        "unavailable": "So many people are arriving that we could not give you a "
        "place just yet. This page retries by itself in a few seconds.",
        "title_bad_request": "That request could not be understood",
        "not_found": "There is no page at this address.",
        "go_home": "Go to the result page",
        "title_prequeue": "Results are not out yet",
        "release_at": "Results will be released at",
        "countdown": "Time left",
        "prequeue_fair": "You have a place in the pre-queue. At the release time everyone "
        "in it gets a random place in line, so coming earlier, or refreshing at the last "
        "second, gains nothing. Keep this page open: it will show your place by itself.",
        "releasing": "Releasing now: your place in line is being drawn…",
        "notice": "Notice",
        "language": "भाषा: हिन्दी",
        "title_lookup_limit": "All lookups for this turn are used",
        "lookup_limit": "Each turn allows {limit} result lookups, and all of them have "
        "been used (perhaps on another device). To look up more, join the line again: "
        "it will not take long.",
        "title_join_limit": "Please wait a moment",
        "join_limit": "Many new places in line were taken from your network just now. "
        "This page tries again by itself in {seconds} seconds. If you already "
        "have a place, open the page in the browser where you joined: your place is kept.",
    },
    "hi": {
        "title_waiting": "आप कतार में हैं",
        "lead": "परिणाम सभी को क्रम से दिखाए जा रहे हैं। यह पेज अपने आप अपडेट होता है।",
        "your_place": "कतार में आपका स्थान",
        "ahead": "आपसे आगे लोग",
        "eta": "अनुमानित प्रतीक्षा",
        "eta_minutes": "{low}–{high} मिनट",
        "eta_under_minute": "एक मिनट से कम",
        "eta_paused": "प्रवेश रुका हुआ है; आपका स्थान सुरक्षित है",
        "progress": "प्रगति",
        "updated": "पिछला अपडेट",
        "keep_place": "पेज रीफ़्रेश करने या बंद करने से आपका स्थान नहीं जाता। "
        "इसी ब्राउज़र में वापस आएँ, आप कतार में ही रहेंगे।",
        "reconnecting": "फिर से जुड़ रहे हैं… आपका स्थान सुरक्षित है; संपर्क होते ही आँकड़े अपडेट होंगे।",
        "paused": "प्रवेश कुछ देर के लिए रुका है। आपका स्थान सुरक्षित है।",
        "ready": "आपकी बारी आ गई है। परिणाम पेज खुल रहा है…",
        "continue": "आगे बढ़ें",
        "rejected_garbled": "आपका कतार टिकट पढ़ा नहीं जा सका, इसलिए आपको कतार के अंत में "
        "नया स्थान दिया गया है।",
        "rejected_tampered": "आपका कतार टिकट हमारा जारी किया हुआ नहीं था (बदला या कॉपी "
        "किया गया), इसलिए आपको कतार के अंत में नया स्थान दिया गया है।",
        "rejected_foreign": "आपका कतार टिकट पिछली कतार का था, इसलिए आपको कतार के अंत में "
        "नया स्थान दिया गया है।",
        "rejected_expired": "आपके कतार टिकट की अवधि समाप्त हो गई थी, इसलिए आपको कतार के "
        "अंत में नया स्थान दिया गया है।",
        "rejected_spent": "आपका कतार टिकट परिणाम देखने के लिए पहले ही इस्तेमाल हो चुका है, "
        "इसलिए आपको कतार के अंत में नया स्थान दिया गया है।",
        "pass_expired": "परिणाम देखने का आपका समय समाप्त हो गया, इसलिए आप फिर से कतार में "
        "हैं। ज़्यादा देर नहीं लगेगी।",
        "title_busy": "परिणाम सेवा व्यस्त है",
        "busy": "परिणाम सेवा अभी व्यस्त है। हम अपने आप दोबारा कोशिश कर रहे हैं; आपकी "
        "बारी बनी रहेगी, फिर से कतार में लगने की ज़रूरत नहीं है।",
        "retry_now": "अभी दोबारा कोशिश करें",
        "title_unavailable": "कृपया प्रतीक्षा करें",
        "unavailable": "इस समय बहुत से लोग आ रहे हैं, इसलिए अभी आपको स्थान नहीं दिया जा "
        "सका। यह पेज कुछ सेकंड में अपने आप दोबारा कोशिश करेगा।",
        "title_bad_request": "यह अनुरोध समझा नहीं जा सका",
        "not_found": "इस पते पर कोई पेज नहीं है।",
        "go_home": "परिणाम पेज पर जाएँ",
        "title_prequeue": "परिणाम अभी जारी नहीं हुए हैं",
        "release_at": "परिणाम जारी होने का समय",
        "countdown": "बाकी समय",
        "prequeue_fair": "आपको पूर्व-कतार में स्थान मिल गया है। जारी होने के समय पूर्व-कतार के "
        "सभी लोगों को कतार में यादृच्छिक (रैंडम) स्थान मिलेगा, इसलिए पहले आने या आख़िरी पल "
        "में रीफ़्रेश करने से कोई लाभ नहीं। यह पेज खुला रखें: यह अपने आप आपका स्थान दिखाएगा।",
        "releasing": "परिणाम जारी हो रहे हैं: कतार में आपका स्थान तय किया जा रहा है…",
        "notice": "सूचना",
        "language": "Language: English",
        "title_lookup_limit": "इस बारी की सभी खोजें हो चुकी हैं",
        "lookup_limit": "हर बारी में {limit} परिणाम खोजे जा सकते हैं, और सभी इस्तेमाल हो चुके "
        "हैं (शायद किसी दूसरे डिवाइस पर)। और खोजने के लिए फिर से कतार में लगें: ज़्यादा "
        "देर नहीं लगेगी।",
        "title_join_limit": "कृपया थोड़ी देर रुकें",
        "join_limit": "अभी-अभी आपके नेटवर्क से कतार में बहुत से नए स्थान लिए गए। "
        "यह पेज {seconds} सेकंड में अपने आप दोबारा कोशिश करेगा। अगर आपके पास पहले से स्थान "
        "है, तो वही ब्राउज़र खोलें जिसमें आप कतार में लगे थे: आपका स्थान सुरक्षित है।",
    },
}


def pick_language(query: str | None, cookie: str | None, accept: str | None) -> str:
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    return from_accept_language(accept) or DEFAULT_LANGUAGE
